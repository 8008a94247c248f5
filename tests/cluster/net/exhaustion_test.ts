/**
 * EMFILE recovery, end to end: the agent's four listeners (metrics, RPC, data plane, gossip
 * TCP) in a process under `ulimit -n 128` are flooded past the limit, then the flood goes, and
 * every port must accept and answer again. Before, the node:net listeners never accepted again
 * (no error, no log) and the data plane's `for await` accept loop ended. While out of
 * descriptors, a session opened on a peer fails as this agent's fault, not the peer's.
 */
import { assert, assertEquals } from "../../support/assert.ts";

const CHILD = new URL("./exhaustion_child.ts", import.meta.url).pathname;

/** Whether the listener on `port` takes a connection and reacts to `send` within `ms`. */
async function answers(port: number, send: Uint8Array, ms = 1500): Promise<boolean> {
  let conn: Deno.Conn;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port, signal: AbortSignal.timeout(ms) });
  } catch {
    return false;
  }
  const timer = setTimeout(() => conn.close(), ms);
  try {
    await conn.write(send);
    // Any answer: bytes, or the server closing (a gossip stream refusing a non-frame).
    await conn.read(new Uint8Array(256));
    return true;
  } catch (e) {
    return !(e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted);
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

Deno.test("every listener accepts again after the process ran out of descriptors", async () => {
  const child = new Deno.Command("sh", {
    args: ["-c", `ulimit -n 128; exec "${Deno.execPath()}" run -A "${CHILD}"`],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  const line = async (): Promise<string> => {
    for (;;) {
      const i = pending.indexOf("\n");
      if (i >= 0) {
        const l = pending.slice(0, i);
        pending = pending.slice(i + 1);
        return l;
      }
      const { value, done } = await out.read();
      if (done) throw new Error("the child exited");
      pending += value;
    }
  };
  const stdin = child.stdin.getWriter();
  const say = (s: string) => stdin.write(new TextEncoder().encode(s + "\n"));
  const stderr = new Response(child.stderr).text();
  const flood: Deno.Conn[] = [];
  try {
    const ports = JSON.parse(await line()) as Record<string, number>;
    // Connections to every port, then the rest of the child's 128 descriptors taken, then more
    // connections: the listeners' accepts fail with EMFILE.
    const connectAll = async (n: number) => {
      for (let i = 0; i < n; i++) {
        for (const port of Object.values(ports)) {
          flood.push(await Deno.connect({ hostname: "127.0.0.1", port }));
        }
      }
    };
    await connectAll(10);
    await say("exhaust");
    const { held } = JSON.parse(await line());
    await connectAll(10);
    await new Promise((r) => setTimeout(r, 300));
    // Out of descriptors, a session on a healthy stage fails as this agent's own failure.
    await say("attribute");
    const got = JSON.parse(await line());
    assertEquals(got.name, "LocalExhaustionError", JSON.stringify(got));
    assert(/out of file descriptors/.test(got.message), got.message);
    await say("release");
    await line();
    console.log(`the child held ${held} descriptors more; ${flood.length} connections`);
    for (const c of flood) c.close();
    const released = performance.now();
    const probes: Record<string, Uint8Array> = {
      metrics: new TextEncoder().encode("GET /health HTTP/1.1\r\nhost: x\r\n\r\n"),
      rpc: new TextEncoder().encode("GET / HTTP/1.1\r\nhost: x\r\n\r\n"),
      plane: new TextEncoder().encode("XXXX"),
      gossip: new Uint8Array([0xff, 0xff, 0xff, 0xff]),
      api: new TextEncoder().encode("GET /health HTTP/1.1\r\nhost: x\r\n\r\n"),
    };
    const deaf = new Set(Object.keys(ports));
    while (deaf.size > 0 && performance.now() - released < 6000) {
      for (const name of [...deaf]) {
        if (await answers(ports[name], probes[name], 500)) deaf.delete(name);
      }
    }
    const ms = Math.round(performance.now() - released);
    assertEquals([...deaf], [], `still deaf ${ms} ms after`);
    console.log(`every port answered ${ms} ms after the descriptors were free`);
    await say("quit");
    const log = await stderr;
    // One warning when accepting failed, one with the count when it works again.
    assert(/cannot accept connections/.test(log), log);
    assert(/accepting connections again.*failed_accepts/.test(log), log);
  } finally {
    for (const c of flood) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    await stdin.close().catch(() => {});
    await stderr.catch(() => {});
  }
});
