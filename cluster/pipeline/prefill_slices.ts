/**
 * How a StageHost shares passes between sessions (continuous batching with chunked prefill):
 * the frames waiting for a pass, which of them (and how many of their rows) the next pass
 * takes, and how a prompt run in slices is put back together. While other sessions are open a
 * long prompt runs a slice per pass, sized by the stage's recent pass times to cost about one
 * and a half decode passes (and at least as many rows as the pass decodes), and waits at the front
 * of the queue for the next, so the others' tokens keep coming (vLLM's chunked prefill, with a
 * time budget instead of a token budget).
 *
 * @module
 */
import type { TopCandidates } from "../../kernels/backend.ts";
import type { Session, StageOutput } from "../../model/llama.ts";
import type { Sampler } from "../../model/sampler.ts";
import type { StageFrame, StageResult } from "./stage_frame.ts";

/** A session open on a stage: its KV cache and, at the tail, its sampler. */
export interface HostedSession {
  session: Session;
  /** The tail's sampler, made once when the session opened with sampling settings. */
  sampler?: Sampler;
  /** Log-probabilities of this many alternatives with each token. */
  topLogprobs: number;
  /**
   * Set when the session opened from the prefix cache (StageHost.restorePrefix) until its first
   * frame with rows: the ids looked up and the positions restored. That frame says how many the
   * chain keeps (StageFrame.cachedPrefix); the tail's sampler takes those ids into its history.
   */
  restored?: { ids: Int32Array; n: number };
}

/** A frame waiting for the next batched pass. */
export interface PendingStep {
  sessionId: string;
  hosted: HostedSession;
  frame: StageFrame;
  rows: number;
  /** The sampler has taken this frame's tokens already (the candidates path). */
  accepted?: boolean;
  /** Rows of the frame run so far: a long prompt runs in slices while other sessions decode. */
  done: number;
  /** Rows the pass being built runs. */
  take: number;
  /** Output rows of its slices so far (a sliced frame at a stage before the tail). */
  hidden?: Float32Array;
  /** Compute of its slices before the last. */
  ms: number;
  resolve: (r: StageResult) => void;
  reject: (e: unknown) => void;
}

/** Fewest prompt rows a slice runs (fewer would waste the pass on fixed costs). */
export const MIN_SLICE = 2;

/** Sessions whose next waiting frame is one row (a decode step): the rows a pass owes them. */
export function decodeRowsWaiting(waiting: PendingStep[]): number {
  const first = new Set<HostedSession>();
  let n = 0;
  for (const p of waiting) {
    if (first.has(p.hosted)) continue;
    first.add(p.hosted);
    if (rowsLeft(p) === 1) n++;
  }
  return n;
}

/**
 * The next batch from `waiting` (in arrival order, one frame per session, within `max` rows),
 * each frame's rows for this pass in `take`, and the frames left for later. With a `slice`
 * limit and one-row frames (decode steps) waiting, the prompts in a pass share at most `slice`
 * rows between them and every waiting one-row frame keeps its place: however many prompts arrive
 * together, a running stream's next token waits for one pass, not for all of them. With only
 * prompts waiting, each takes up to `slice` rows. With no slice limit, a
 * frame alone may be longer than a pass (forward() chunks it), and one that does not fit beside
 * others waits.
 */
export function takeBatch(
  waiting: PendingStep[],
  max: number,
  slice: number,
): { batch: PendingStep[]; rest: PendingStep[] } {
  const batch: PendingStep[] = [];
  const seen = new Set<HostedSession>();
  let rows = 0;
  const rest: PendingStep[] = [];
  // Rows held for the one-row frames (each session's first waiting frame) not taken yet.
  let held = slice !== Infinity ? decodeRowsWaiting(waiting) : 0;
  // With decode rows waiting, the prompts share one slice (those rows wait for this pass);
  // with none, each prompt takes its own slice, as many as fit.
  const shared = held > 0;
  let promptRows = slice;
  /**
   * Rows a prompt leaves for the one-row frames still to come; the pass's first prompt leaves
   * at most all but MIN_SLICE of the pass, so as many decoding streams as a pass holds cannot
   * keep it waiting for ever.
   */
  const promptHold = (first: boolean) =>
    Math.max(0, first ? Math.min(held, max - rows - MIN_SLICE) : held);
  for (const p of waiting) {
    const left = rowsLeft(p);
    const one = left === 1 && !seen.has(p.hosted);
    if (one && slice !== Infinity) held--;
    const take = slice === Infinity
      ? (batch.length === 0 || left <= max - rows ? left : 0)
      : one
      ? Math.min(1, max - rows)
      : Math.min(left, shared ? promptRows : slice, max - rows - promptHold(promptRows === slice));
    // One frame per session per pass (its rows depend on the previous frame's; a later frame
    // waits behind one that found no room), and no slice so small that the pass's fixed costs
    // outweigh it.
    const wait = seen.has(p.hosted) || take <= 0 ||
      (take < left && take < MIN_SLICE && batch.length > 0);
    seen.add(p.hosted);
    if (wait) {
      rest.push(p);
      continue;
    }
    p.take = take;
    batch.push(p);
    rows += take;
    if (!one) promptRows -= take;
  }
  return { batch, rest };
}

/** The pass costs a stage sizes prompt slices by. */
export class SliceClock {
  /** Recent time of a pass of decode rows only (ms; 0: not measured yet). */
  #decodeMs = 0;
  /** Recent time per row of passes with prompt rows (ms; 0: not measured yet). */
  #rowMs = 0;

  /** Learn from a pass of `batch` that took `ms`. */
  measure(batch: PendingStep[], ms: number): void {
    const rows = batch.reduce((a, p) => a + p.take, 0);
    const avg = (old: number, x: number) => (old ? 0.8 * old + 0.2 * x : x);
    if (batch.every((p) => p.take === 1)) this.#decodeMs = avg(this.#decodeMs, ms);
    else if (rows >= 2 * MIN_SLICE) this.#rowMs = avg(this.#rowMs, ms / rows);
  }

  /**
   * Prompt rows a pass may run beside `decodeRows` decode rows, ≤ `cap`: ~1.5 recent decode
   * passes' worth, so a running stream's time between tokens stays within ~3× its own (on CPU a
   * prompt row costs about 0.4 of a decode pass: on the 110M model 5 ms alone, 11 ms with slices
   * of 2–3 rows), and never fewer than the decode rows within `cap` (the pass's own row limit
   * still applies in takeBatch). Many streams make a pass long already, and admitting prompts as
   * fast as they decode keeps them streaming: 16 clients on the 110M model ran passes of 11
   * decode rows beside a 3-row slice, with 5 new sessions waiting for their prompts in every pass.
   */
  limit(cap: number, decodeRows = 0): number {
    if (cap <= 0) return Infinity;
    if (!this.#decodeMs || !this.#rowMs) return cap;
    const byTime = Math.floor((1.5 * this.#decodeMs) / this.#rowMs);
    return Math.max(MIN_SLICE, Math.min(cap, Math.max(byTime, decodeRows)));
  }
}

/** Rows of `p` not run yet. */
function rowsLeft(p: PendingStep): number {
  return p.rows - p.done;
}

/** Whether this pass runs the rest of `p`. */
export function lastSlice(p: PendingStep): boolean {
  return p.take >= rowsLeft(p);
}

/**
 * Count this pass's slice of `p` (its hidden rows kept at a stage before the tail, `nEmbd`
 * wide); false while rows of it are left for a later pass.
 */
export function advance(
  p: PendingStep,
  out: StageOutput | { candidates: TopCandidates },
  ms: number,
  nEmbd: number,
): boolean {
  const last = lastSlice(p);
  if ("hidden" in out && (p.done > 0 || !last)) {
    p.hidden ??= new Float32Array(p.rows * nEmbd);
    p.hidden.set(out.hidden, p.done * nEmbd);
  }
  p.done += p.take;
  if (!last) p.ms += ms;
  return last;
}
