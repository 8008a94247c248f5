/**
 * Per-node transfer progress for `llmctl models deploy`: bars with rate and ETA redrawn in place
 * (ANSI cursor movement) on a terminal, plain lines when stdout is not a TTY (a line per node
 * when its state changes, and at most every 2 s while fetching), or JSON events, one object per
 * line, with `--json`.
 *
 * @example
 * ```ts
 * const view = new TransferProgressView({ mode: "json" });
 * for await (const m of conn.transfer.deploy({ path })) view.update(m);
 * ```
 *
 * @module
 */
import type { DeployResponse, TransferProgress } from "../proto/mod.ts";
import { TransferState } from "../proto/mod.ts";
import { formatBytes, formatDuration } from "./format.ts";
import type { PullEvent } from "../cluster/hub/mod.ts";

/** How progress is shown. */
export type ProgressMode = "tty" | "lines" | "json";

/** The lower-case name of a transfer state ("fetching", "loaded", …). */
export function transferStateName(s: TransferState): string {
  return (TransferState[s] ?? "unspecified").toLowerCase();
}

/** One node's progress as a plain object (what --json prints). */
export function progressJson(p: TransferProgress): Record<string, unknown> {
  return {
    node: p.nodeId,
    model: p.model,
    state: transferStateName(p.state),
    layers: p.toLayer > p.fromLayer ? [p.fromLayer, p.toLayer] : null,
    bytes_done: Number(p.bytesDone),
    bytes_total: Number(p.bytesTotal),
    bytes_per_second: Math.round(p.bytesPerSecond),
    eta_seconds: Math.round(p.etaSeconds * 10) / 10,
    cached_bytes: Number(p.cachedBytes),
    bytes_received: Number(p.bytesReceived),
    bytes_refetched: Number(p.bytesRefetched),
    corrupt_chunks: p.corruptChunks,
    detail: p.detail || undefined,
  };
}

/** A text bar like `[██████░░░░]`. */
export function progressBar(done: number, total: number, width = 24): string {
  const f = total > 0 ? Math.min(1, done / total) : 1;
  const n = Math.round(f * width);
  return `[${"█".repeat(n)}${"░".repeat(width - n)}]`;
}

/** One line for one node. */
export function progressLine(p: TransferProgress, idWidth = 8): string {
  const done = Number(p.bytesDone);
  const total = Number(p.bytesTotal);
  const pct = total > 0 ? Math.floor((100 * done) / total) : 100;
  const layers = p.toLayer > p.fromLayer ? `[${p.fromLayer},${p.toLayer})` : "-";
  // Under 1 B/s a fetch is stalled (its source gone, say): an ETA of 1e70 s says nothing.
  const fetching = p.state === TransferState.FETCHING;
  const rate = !fetching
    ? ""
    : p.bytesPerSecond >= 1 && Number.isFinite(p.etaSeconds)
    ? ` ${formatBytes(p.bytesPerSecond)}/s ETA ${formatDuration(Math.ceil(p.etaSeconds) * 1000)}`
    : done > 0
    ? " stalled"
    : "";
  const extra = p.corruptChunks ? ` ${p.corruptChunks} corrupt chunk(s) re-fetched` : "";
  return `${p.nodeId.padEnd(idWidth)} ${progressBar(done, total)} ${String(pct).padStart(3)}% ` +
    `${formatBytes(done)}/${formatBytes(total)} ${
      transferStateName(p.state)
    } ${layers}${rate}${extra}`;
}

/** Renders DeployResponse updates. */
export class TransferProgressView {
  #drawn = 0;
  #lastLine = new Map<string, { text: string; at: number; state: TransferState }>();
  readonly #mode: ProgressMode;
  readonly #write: (s: string) => void;

  /** @param opts mode (default: tty when stdout is a terminal, else lines) and output sink */
  /** Terminal columns: a redrawn line must not wrap (the cursor moves up one row per node). */
  readonly #columns: () => number;

  constructor(
    opts: { mode?: ProgressMode; write?: (s: string) => void; columns?: () => number } = {},
  ) {
    this.#mode = opts.mode ?? (Deno.stdout.isTerminal() ? "tty" : "lines");
    const enc = new TextEncoder();
    this.#write = opts.write ?? ((s) => Deno.stdout.writeSync(enc.encode(s)));
    this.#columns = opts.columns ?? (() => {
      try {
        return Deno.consoleSize().columns;
      } catch {
        return 80;
      }
    });
  }

  /** Show one update. */
  update(m: DeployResponse): void {
    if (this.#mode === "json") {
      if (m.nodes.length === 0 && m.placement) {
        this.#write(
          JSON.stringify({
            event: "planned",
            model: m.model,
            signature: m.signature,
            placement: m.placement.stages.map((s) => ({
              node: s.nodeId,
              from: s.fromLayer,
              to: s.toLayer,
            })),
          }) + "\n",
        );
      }
      for (const n of m.nodes) {
        this.#write(JSON.stringify({ event: "progress", ...progressJson(n) }) + "\n");
      }
      if (m.done) {
        this.#write(JSON.stringify({ event: "done", model: m.model, message: m.message }) + "\n");
      }
      return;
    }
    if (m.nodes.length === 0 && m.placement) {
      this.#write(
        `deploying ${m.model} (manifest ${m.signature}): ` +
          m.placement.stages.map((s) => `${s.nodeId}:[${s.fromLayer},${s.toLayer})`).join(" ") +
          "\n",
      );
    }
    const w = Math.max(4, ...m.nodes.map((n) => n.nodeId.length));
    if (this.#mode === "tty") {
      let out = this.#drawn ? `\x1b[${this.#drawn}A` : "";
      // A pty that reports no size (0 columns: `script`, some CI runners, `docker run -t`)
      // is taken as 80 wide, not cut to 20 columns, which left only the node and half a bar.
      const reported = this.#columns();
      const cols = Math.max(20, (reported > 0 ? reported : 80) - 1);
      for (const n of m.nodes) out += `\x1b[2K${[...progressLine(n, w)].slice(0, cols).join("")}\n`;
      this.#drawn = m.nodes.length;
      this.#write(out);
    } else {
      const now = Date.now();
      for (const n of m.nodes) {
        const text = progressLine(n, w);
        const last = this.#lastLine.get(n.nodeId);
        if (last && (last.state === n.state && (now - last.at < 2000 || last.text === text))) {
          continue;
        }
        this.#lastLine.set(n.nodeId, { text, at: now, state: n.state });
        this.#write(text + "\n");
      }
    }
    if (m.done && m.message) this.#write(m.message + "\n");
  }
}

/**
 * Progress of `llmctl models pull` (and of any command given an `hf:` model) on stderr, so
 * stdout keeps only the result: one bar redrawn in place on a terminal, a line every 2 s
 * otherwise, or JSON events one per line (`mode: "json"`, at most every 500 ms while bytes
 * flow).
 *
 * @example
 * ```ts
 * const view = new PullProgressView({ mode: "json" });
 * await pullModel(ref, { cacheDir, onEvent: (e) => view.update(e) });
 * view.finish();
 * ```
 */
export class PullProgressView {
  readonly #mode: ProgressMode;
  readonly #write: (s: string) => void;
  readonly #now: () => number;
  #lastAt = -Infinity;
  #started = 0;
  #startBytes = 0;
  #open = false;

  constructor(
    opts: { mode?: ProgressMode; write?: (s: string) => void; now?: () => number } = {},
  ) {
    this.#mode = opts.mode ?? (Deno.stderr.isTerminal() ? "tty" : "lines");
    const enc = new TextEncoder();
    this.#write = opts.write ?? ((s) => Deno.stderr.writeSync(enc.encode(s)));
    this.#now = opts.now ?? (() => Date.now());
  }

  /** Show one event. */
  update(e: PullEvent): void {
    const now = this.#now();
    if (this.#mode === "json") {
      if (e.event === "progress") {
        if (now - this.#lastAt < 500 && e.bytes_done < e.bytes_total) return;
        this.#lastAt = now;
      }
      this.#write(JSON.stringify(e) + "\n");
      return;
    }
    if (e.event === "resolved") {
      this.#line(
        e.cached
          ? `${e.ref}: ${e.file} (commit ${e.commit.slice(0, 12)}) is cached`
          : `${e.ref}: pulling ${e.file} (commit ${e.commit.slice(0, 12)}), ${formatBytes(e.size)}`,
      );
      return;
    }
    if (e.event === "offline") {
      this.#line(`${e.ref}: ${e.reason}; using the cached copy`);
      return;
    }
    if (e.event === "retry") {
      this.#line(
        `${e.file}: ${e.error}; retry ${e.attempt} in ${(e.delay_ms / 1000).toFixed(1)} s`,
      );
      return;
    }
    if (!this.#started) {
      this.#started = now;
      this.#startBytes = e.bytes_done;
    }
    const finished = e.bytes_done >= e.bytes_total;
    const every = this.#mode === "tty" ? 100 : 2000;
    if (!finished && now - this.#lastAt < every) return;
    this.#lastAt = now;
    const secs = (now - this.#started) / 1000;
    const rate = secs > 0 ? (e.bytes_done - this.#startBytes) / secs : 0;
    const pct = e.bytes_total > 0 ? Math.floor((100 * e.bytes_done) / e.bytes_total) : 100;
    const eta = rate > 0 && !finished
      ? ` ETA ${Math.ceil((e.bytes_total - e.bytes_done) / rate)}s`
      : "";
    const text = `${progressBar(e.bytes_done, e.bytes_total)} ${String(pct).padStart(3)}% ` +
      `${formatBytes(e.bytes_done)}/${formatBytes(e.bytes_total)}` +
      (rate > 0 ? ` ${formatBytes(rate)}/s` : "") + eta;
    if (this.#mode === "tty") {
      this.#write(`\r\x1b[2K${text}`);
      this.#open = !finished;
      if (finished) this.#write("\n");
    } else this.#write(text + "\n");
  }

  /** End a bar line left open (a failure mid-download). */
  finish(): void {
    if (this.#open) this.#write("\n");
    this.#open = false;
  }

  #line(text: string): void {
    if (this.#open) this.#write("\n");
    this.#open = false;
    this.#write(text + "\n");
  }
}
