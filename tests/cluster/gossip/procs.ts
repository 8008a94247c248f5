// Start cli_node.ts members as separate processes and follow their JSON event lines.
const CLI = new URL("./cli_node.ts", import.meta.url).pathname;

// deno-lint-ignore no-explicit-any
export type Ev = Record<string, any>;

/** One member process. */
export class NodeProc {
  readonly events: Ev[] = [];
  private waiters: { pred: (e: Ev) => boolean; resolve: (e: Ev) => void }[] = [];
  private writer: WritableStreamDefaultWriter<Uint8Array>;
  private readonly done: Promise<void>;
  readonly child: Deno.ChildProcess;
  addr = "";

  constructor(readonly id: string, args: string[], prefix: string[] = []) {
    const cmd = prefix.length ? prefix[0] : Deno.execPath();
    const all = [
      ...prefix.slice(1),
      ...(prefix.length ? [Deno.execPath()] : []),
      "run",
      "-A",
      CLI,
      "--id",
      id,
      ...args,
    ];
    this.child = new Deno.Command(cmd, {
      args: all,
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.writer = this.child.stdin.getWriter();
    this.done = this.read();
  }

  private async read() {
    let buf = "";
    for await (const chunk of this.child.stdout.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let e: Ev;
        try {
          e = JSON.parse(line);
        } catch {
          continue;
        }
        if (e.event === "ready") this.addr = e.addr;
        this.events.push(e);
        this.waiters = this.waiters.filter((w) => {
          if (!w.pred(e)) return true;
          w.resolve(e);
          return false;
        });
      }
    }
  }

  /** Wait for an event (already seen or future) matching pred. */
  waitFor(pred: (e: Ev) => boolean, timeoutMs: number, what = "event"): Promise<Ev> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`${this.id}: no ${what} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiters.push({ pred, resolve: (e) => (clearTimeout(t), resolve(e)) });
    });
  }

  /** Latest status of member `id` as this process has reported it through events. */
  statusOf(id: string): string | undefined {
    let s: string | undefined;
    for (const e of this.events) {
      if (e.member?.id === id && e.event !== "conflict") s = e.member.status;
    }
    return s;
  }

  /** Send a JSON command on stdin. */
  async send(cmd: Ev): Promise<void> {
    await this.writer.write(new TextEncoder().encode(JSON.stringify(cmd) + "\n"));
  }

  /** kill -9, and reap. */
  async kill(): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await this.close();
  }

  /** Reap after exit. */
  async close(): Promise<void> {
    await this.writer.close().catch(() => {});
    await this.child.status;
    await this.done;
  }
}

/** Poll until pred() holds. */
export async function until(pred: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const t0 = performance.now();
  while (!pred()) {
    if (performance.now() - t0 > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return performance.now() - t0;
}
