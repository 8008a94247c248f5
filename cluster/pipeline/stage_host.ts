/**
 * A stage as an agent serves it: a loaded `LlamaStage` plus the sessions (KV caches, tail
 * samplers) that heads open on it. Transport-free: the Forward RPC handler and in-process links
 * both call `step`.
 */
import { EventLoopYield } from "./event_loop.ts";
import type { KVType, TopCandidates } from "../../kernels/backend.ts";
import {
  type LlamaStage,
  type Session,
  type StageInput,
  type StageOutput,
} from "../../model/llama.ts";
import { Sampler } from "../../model/sampler.ts";
import { candidateRequest, sampleFrame } from "./tail_sampling.ts";
import { withSamplingDefaults } from "../../model/sampling_defaults.ts";
import {
  type StageFrame,
  type StageResult,
  StageSessionError,
  type TailSampling,
} from "./stage_frame.ts";
import {
  advance,
  decodeRowsWaiting,
  type HostedSession,
  lastSlice,
  type PendingStep,
  SliceClock,
  takeBatch,
} from "./prefill_slices.ts";

import { Lookahead } from "./lookahead.ts";
import { KvAdmission, type RefusalReason, sessionsThatFit } from "./kv_admission.ts";
import { spanUntil } from "../telemetry/tracing.ts";

/** Options for a StageHost. */
export interface StageHostOptions {
  /** Most sessions held at once (each owns a KV cache); default 64. */
  maxSessions?: number;
  /** Default context per session; default min(model context, 2048). */
  defaultContext?: number;
  kvType?: KVType;
  /**
   * Whether clients stream output from this process now (an agent heading requests): each pass
   * then first lets their queued writes reach the sockets, so a token is not held back a pass
   * (event_loop.ts). Default: never.
   */
  clientsStreaming?: () => boolean;
  /** Called after every pass with its compute time, rows and sequences (metrics). */
  onStep?: (info: { computeMs: number; rows: number; sequences: number }) => void;
  /**
   * Called when a pass fails for a reason that is not the frame's fault (e.g. the GPU device
   * was lost), so the owner can rebuild the stage on another backend.
   */
  onFailure?: (error: unknown) => void;
  /**
   * Bytes of prefix KV cache of this stage's layers (model/prefix_cache.ts): a session whose
   * prompt starts like an earlier one's restores that part when it opens (restorePrefix) and the
   * chain computes only the rest. 0 or unset: off.
   */
  prefixCacheBytes?: number;
  /**
   * Most milliseconds of decoding a frame's lookahead may take (StageFrame.lookahead), judged by
   * the stage's recent time per token, so streamed tokens keep coming at least this often.
   * Default 250; 0: never decode ahead.
   */
  lookaheadMs?: number;
  /**
   * Most prompt rows a pass runs while other sessions are open (their next tokens wait for the
   * pass): a longer prompt runs in slices, each sized to cost about 1.5 of the stage's recent
   * decode passes, so a running stream's time between tokens stays within ~3× its own, but never
   * fewer rows than the pass decodes (within this cap: many streams make a pass long already).
   * Default 64; 0: a prompt runs whole, however long.
   */
  sliceRows?: number;
  /**
   * Most bytes the open sessions' KV caches may hold together (an agent: its --memory-budget
   * less the stage's weights and --prefix-cache); a session whose cache would pass it is
   * refused as "exhausted" (kv_admission.ts). Default: no bound.
   */
  kvLimitBytes?: number;
}

/**
 * Whether a pass error is the device's fault rather than the frames': WebGPU errors (device
 * lost, out of memory), and anything a GPU backend throws that is not an input error (Deno
 * reports some device losses as plain errors before the backend has classified them).
 */
function isBackendFailure(e: unknown, backend: string): boolean {
  const name = (e as Error)?.name ?? "";
  if (name.startsWith("WebGPU")) return true;
  return backend === "webgpu" && name !== "StageInputError" && name !== "SamplerParamError";
}

/** A stage idle longer than this was woken through the event loop (see drain). */
const IDLE_MS = 0.5;

/**
 * Serves one loaded stage to many sessions with continuous batching: frames that arrive while
 * a pass runs wait, and the next pass takes all of them at once (up to the stage's batch
 * size), so sequences join and leave the batch at every step.
 */
export class StageHost {
  private readonly sessions = new Map<string, HostedSession>();
  private readonly yielder = new EventLoopYield();
  private waiting: PendingStep[] = [];
  /** Frames in the pass that is running now. */
  private inFlight = 0;
  private running = false;
  /** When the last pass ended (performance.now()). */
  private lastPassEnd = 0;
  private readonly maxSessions: number;
  private readonly defaultContext: number;
  private readonly kvType: KVType;
  /** Frames served, for metrics. */
  steps = 0;
  /** Batched passes run, for metrics (steps / passes = mean batch size). */
  passes = 0;
  private readonly onStep?: StageHostOptions["onStep"];
  /** Greedy tokens decoded ahead on the device after a lone frame's own. */
  private readonly ahead: Lookahead;
  /** Who gets a KV cache, and the refusals. */
  private readonly admission: KvAdmission;

  constructor(
    readonly stage: LlamaStage,
    readonly model: string,
    private readonly opts: StageHostOptions = {},
  ) {
    this.maxSessions = opts.maxSessions ?? 64;
    this.defaultContext = opts.defaultContext ?? Math.min(stage.config.contextLength, 2048);
    this.kvType = opts.kvType ?? "f32";
    this.admission = new KvAdmission(stage, this.kvType, opts.kvLimitBytes ?? Infinity);
    this.onStep = opts.onStep;
    this.ahead = new Lookahead(stage, opts.lookaheadMs ?? 250);
    if ((opts.prefixCacheBytes ?? 0) > 0) stage.enablePrefixCache(opts.prefixCacheBytes!);
  }

  /** Layers [from, to) this host runs. */
  get range(): { from: number; to: number } {
    return { from: this.stage.from, to: this.stage.to };
  }

  /** Number of open sessions. */
  get openSessions(): number {
    return this.sessions.size;
  }

  /** Bytes of the hosted weights and of the open sessions' KV caches (what memory is for). */
  get memoryBytes(): { weights: number; kvCache: number } {
    let kv = 0;
    // Caches closed during a pass are held until it ends: they count against the limit too.
    for (const { session } of [...this.sessions.values(), ...this.closing]) {
      kv += this.stage.kvBytes(session.nCtx, session.kv.type);
    }
    return { weights: this.stage.weightBytes, kvCache: kv };
  }

  /** Sessions of the default context that may still open: by count and by KV bytes. */
  get freeSlots(): number {
    const bytes = sessionsThatFit(
      this.admission.limitBytes,
      this.memoryBytes.kvCache,
      this.stage.kvBytes(this.defaultContext, this.kvType),
    );
    return Math.max(0, Math.min(this.maxSessions - this.sessions.size, bytes));
  }

  /** Sessions refused since the stage loaded, by reason. */
  get refusals(): Readonly<Record<RefusalReason, number>> {
    return this.admission.refusals;
  }

  /**
   * Open a session with a KV cache for `maxContext` positions (0 = default). With `sampling`
   * (tail only) every frame answers a sampled token; the settings hold for the session.
   */
  open(sessionId: string, maxContext = 0, sampling?: TailSampling): void {
    if (!sessionId) throw new StageSessionError("session id is empty", "invalid");
    if (this.disposed) {
      // Replaced (a new range or backend loaded): a link that still holds it reads again.
      throw new StageSessionError(
        `stage [${this.stage.from}, ${this.stage.to}) was replaced; its weights are freed`,
        "unavailable",
      );
    }
    if (this.sessions.has(sessionId)) {
      throw new StageSessionError(`session ${sessionId} is already open`, "exists");
    }
    if (this.sessions.size >= this.maxSessions) throw this.admission.full(this.maxSessions);
    if (sampling && !this.stage.isTail) {
      throw new StageSessionError(
        `stage [${this.stage.from}, ${this.stage.to}) is not the tail; only the tail samples`,
        "invalid",
      );
    }
    if ((sampling?.topLogprobs ?? 0) > 20) {
      throw new StageSessionError(`top_logprobs ${sampling!.topLogprobs} exceeds 20`, "invalid");
    }
    // Settings are checked (SamplerParamError) before any KV cache is allocated.
    const sampler = sampling ? new Sampler(withSamplingDefaults(sampling)) : undefined;
    const vocab = this.stage.config.nVocab;
    const pastVocab = Object.keys(sampling?.logitBias ?? {}).find((id) => Number(id) >= vocab);
    if (pastVocab !== undefined) {
      throw new StageSessionError(
        `logit_bias names token ${pastVocab}; the vocabulary has ${vocab} tokens`,
        "invalid",
      );
    }
    const nCtx = maxContext > 0
      ? Math.min(maxContext, this.stage.config.contextLength)
      : this.defaultContext;
    this.sessions.set(sessionId, {
      session: this.admission.allocate(nCtx, this.memoryBytes.kvCache),
      sampler,
      topLogprobs: sampling?.topLogprobs ?? 0,
    });
  }

  /**
   * Copy the KV of this stage's layers for the longest prefix of `ids` its prefix cache holds
   * into a session just opened; returns the positions restored (0 without a cache). The
   * session's first frame with rows then keeps as many as it names (StageFrame.cachedPrefix,
   * the least any stage of the chain restored) and runs from there.
   */
  restorePrefix(sessionId: string, ids: Int32Array): number {
    const hosted = this.sessions.get(sessionId);
    if (!hosted || !this.stage.prefixCache || hosted.session.pos !== 0) return 0;
    // Never past what the session's KV cache holds (a prompt longer than its context fails
    // when its frame comes, as it would without the cache).
    const own = ids.slice(0, Math.min(ids.length, hosted.session.nCtx));
    const n = this.stage.restorePrefix(hosted.session, own);
    hosted.restored = { ids: own, n };
    return n;
  }

  /** Free a session's KV cache; unknown ids are ignored (close is idempotent). */
  close(sessionId: string): void {
    const s = this.sessions.get(sessionId);
    if (!s) return;
    this.sessions.delete(sessionId);
    // A pass running on its cache (a pass yields between layers, so a stream can end meanwhile)
    // keeps the cache until it ends: freed now, the memory could go to another session mid-pass.
    if (this.inPass.has(s)) this.closing.add(s);
    else this.stage.endSession(s.session);
  }

  /** Sessions in the running pass, and those closed during it (freed when it ends). */
  private readonly inPass = new Set<HostedSession>();
  private readonly closing = new Set<HostedSession>();

  /** Close every session and free the stage's weights (it is being replaced or shut down). */
  dispose(): void {
    this.disposed = true;
    this.closeAll();
    // A pass yields between layers: its weights are freed when it ends, not under it (a freed
    // GPU buffer would fail it as a lost device; freed WASM memory could be handed out again).
    if (this.running) this.disposeAfterPass = true;
    else this.stage.dispose();
  }

  /** dispose() came while a pass ran: free the weights when the passes end. */
  private disposeAfterPass = false;
  private disposed = false;

  /** Whether dispose() was called: the host opens no session any more. */
  get retired(): boolean {
    return this.disposed;
  }

  /** Close every session (the stage is being replaced or shut down). */
  closeAll(): void {
    for (const id of [...this.sessions.keys()]) this.close(id);
  }

  /** Frames waiting for a pass or in the running one (the stage's queue depth, for metrics). */
  get pending(): number {
    return this.waiting.length + this.inFlight;
  }

  /** Run one frame of a session through the stage (batched with other sessions' frames). */
  step(sessionId: string, frame: StageFrame): Promise<StageResult> {
    const hosted = this.sessions.get(sessionId);
    if (!hosted) {
      return Promise.reject(
        new StageSessionError(`session ${sessionId} is not open on this stage`, "not_found"),
      );
    }
    const result = new Promise<StageResult>((resolve, reject) => {
      const rows = frame.tokens.length;
      this.waiting.push({
        sessionId,
        hosted,
        frame,
        rows,
        done: 0,
        take: 0,
        ms: 0,
        resolve,
        reject,
      });
      if (!this.running) this.drain();
    });
    // Traced from queueing to result (a no-op unless OTEL_DENO=true).
    return spanUntil("llm.stage.step", {
      "llm.layers": `${this.stage.from}-${this.stage.to}`,
      "llm.tokens": frame.tokens.length,
    }, result);
  }

  /** Run passes until no frame waits. */
  private async drain(): Promise<void> {
    this.running = true;
    // Idle for a while (a remote stage waiting for its next frame): the frame that woke us came
    // through the event loop, which has just polled I/O, so only the frames of that poll need
    // to join — an immediate, and not even that when no other session is open. Back-to-back
    // passes (an in-process head asks again within microseconds) still give I/O its turn at
    // least every budget.
    let woken = performance.now() - this.lastPassEnd > IDLE_MS;
    try {
      while (this.waiting.length > 0) {
        // Let the event loop run between passes: sockets (HTTP clients, remote frames, health
        // probes, disconnects) are served, and frames that arrive meanwhile join this pass.
        const flush = this.opts.clientsStreaming?.() ?? false;
        if (woken) await this.yielder.afterIdle(this.sessions.size <= 1 && !flush);
        else await this.yielder.turn(flush);
        woken = false;
        const batch = this.takeBatch();
        this.inFlight = batch.length;
        for (const p of batch) this.inPass.add(p.hosted);
        try {
          await this.runBatch(batch);
        } finally {
          this.inFlight = 0;
          this.lastPassEnd = performance.now();
          this.inPass.clear();
          for (const s of this.closing) this.stage.endSession(s.session);
          this.closing.clear();
        }
      }
    } finally {
      this.running = false;
      if (this.disposeAfterPass) {
        this.disposeAfterPass = false;
        this.stage.dispose();
      } else if (!(this.stage.isHead && this.stage.isTail)) {
        // Part of a chain, this stage's next frame is at least a hop away: its worker threads
        // sleep instead of spinning on the cores the other stages compute on.
        this.stage.backend.park?.();
      }
    }
  }

  /** The next batch (prefill_slices.ts); the frames it leaves wait for later passes. */
  private takeBatch(): PendingStep[] {
    const slice = this.sessions.size > 1
      ? this.clock.limit(this.opts.sliceRows ?? 64, decodeRowsWaiting(this.waiting))
      : Infinity;
    const { batch, rest } = takeBatch(this.waiting, this.stage.maxBatch, slice);
    this.waiting = rest;
    return batch;
  }

  /** The pass costs prompt slices are sized by. */
  private readonly clock = new SliceClock();

  /**
   * A session's first frame with rows after it opened from the prefix cache: keep the positions
   * the frame says the chain restored (the rest is recomputed), and give the tail's sampler
   * those ids as history. Without a restore, a frame naming a cached prefix is refused.
   */
  private startAfterPrefix(p: PendingStep): void {
    const keep = p.frame.cachedPrefix ?? 0;
    const r = p.hosted.restored;
    if (!r) {
      if (keep > 0 && p.hosted.session.pos === 0) {
        throw new StageSessionError(
          `the frame starts after ${keep} cached positions, but this stage restored none`,
          "invalid",
        );
      }
      return;
    }
    p.hosted.restored = undefined;
    if (keep > r.n) {
      throw new StageSessionError(
        `the frame starts after ${keep} cached positions; this stage restored ${r.n}`,
        "invalid",
      );
    }
    this.stage.keepPrefix(p.hosted.session, keep);
    if (keep > 0) p.hosted.sampler?.accept(r.ids.subarray(0, keep));
  }

  /** The rows of `p` this pass runs: its tokens at the head, else hidden. */
  private sliceOf(p: PendingStep): StageInput {
    if (p.done === 0) this.startAfterPrefix(p);
    const whole: StageInput = this.stage.isHead
      ? { tokens: p.frame.tokens }
      : { hidden: p.frame.hidden ?? new Float32Array(0), nTokens: p.rows };
    p.take = Math.min(p.take, p.rows - p.done);
    // A frame run in slices is checked whole before its first slice touches the KV cache (a bad
    // row, or no room, would otherwise fail it half-run); one run whole is checked by its pass.
    if (p.done === 0 && p.take < p.rows) this.stage.validate(p.hosted.session, whole);
    if ("tokens" in whole) return { tokens: whole.tokens.subarray(p.done, p.done + p.take) };
    const E = this.stage.config.nEmbd;
    const hidden = whole.hidden.subarray(p.done * E, (p.done + p.take) * E);
    return { hidden, nTokens: p.take };
  }

  private async runBatch(batch: PendingStep[]): Promise<void> {
    // A session closed while its frame waited fails alone, not the batch.
    const live = batch.filter((p) => {
      if (this.sessions.get(p.sessionId) === p.hosted) return true;
      p.reject(new StageSessionError(`session ${p.sessionId} was closed`, "not_found"));
      return false;
    });
    if (live.length === 0) return;
    const t0 = performance.now();
    let outs: (StageOutput | { candidates: TopCandidates })[];
    // Rows nobody reads skip the tail's output matrix: partial frames, and slices before a
    // frame's last.
    const inputs: {
      session: Session;
      input: StageInput;
      ids: Int32Array;
      noOutput: boolean;
    }[] = [];
    for (const p of [...live]) {
      try {
        const input = this.sliceOf(p);
        inputs.push({
          session: p.hosted.session,
          input,
          // The rows' token ids (every frame carries them): a prefix cache keys blocks by them.
          // After the first stage they are the sender's word for what the hidden rows encode:
          // the cache trusts the stages before it (README: mTLS or a cluster-only network).
          ids: p.frame.tokens.subarray(p.done, p.done + p.take),
          noOutput: !!p.frame.partial || !lastSlice(p),
        });
      } catch (e) {
        // This frame alone is bad (it cannot fit): it fails, the others run.
        live.splice(live.indexOf(p), 1);
        p.reject(e);
      }
    }
    if (live.length === 0) return;
    /** Sliced frames with rows left: back to the front of the queue after this pass. */
    const again: PendingStep[] = [];
    try {
      const one = live.length === 1 ? live[0] : undefined;
      const want = one && !one.frame.partial && one.done === 0 && lastSlice(one)
        ? candidateRequest(one, !!this.stage.backend.topCandidates)
        : null;
      outs = want
        ? [
          await this.stage.forwardCandidates(
            inputs[0].session,
            inputs[0].input,
            want,
            inputs[0].ids,
          ),
        ]
        : one
        ? [
          await this.stage.forward(
            one.hosted.session,
            inputs[0].input,
            inputs[0].ids,
            inputs[0].noOutput,
          ),
        ]
        : await this.stage.forwardBatch(inputs);
    } catch (e) {
      if (isBackendFailure(e, this.stage.backend.name)) {
        // The device, not the frames, failed: tell the owner, and fail these frames as a stage
        // outage so their heads re-place and replay instead of giving up.
        this.opts.onFailure?.(e);
        const outage = new StageSessionError(
          `stage [${this.stage.from}, ${this.stage.to}) lost its backend: ${(e as Error).message}`,
          "unavailable",
        );
        for (const p of live) p.reject(outage);
        return;
      }
      // Only a frame the pass refused before touching any KV cache (StageInputError) can run
      // again: after another failure the rows may be in the caches already, and running them
      // again would store them at the wrong positions. Those frames fail; their heads replay.
      if (live.length === 1 || (e as Error)?.name !== "StageInputError") {
        for (const p of live) p.reject(e);
        return;
      }
      // One bad frame must not fail its neighbours: retry each alone so the error lands where
      // it belongs (validation happens before any KV cache is touched).
      for (const [i, p] of live.entries()) {
        try {
          const out = await this.stage.forward(
            p.hosted.session,
            inputs[i].input,
            inputs[i].ids,
            inputs[i].noOutput,
          );
          if (advance(p, out, 0, this.stage.config.nEmbd)) p.resolve(this.finish(p, out, t0));
          else again.push(p);
        } catch (err) {
          p.reject(err);
        }
      }
      this.waiting.unshift(...again);
      return;
    }
    this.passes++;
    const passMs = performance.now() - t0;
    this.clock.measure(live, passMs);
    this.onStep?.({
      computeMs: passMs,
      rows: live.reduce((a, p) => a + p.take, 0),
      sequences: live.length,
    });
    for (const [i, p] of live.entries()) {
      if (!advance(p, outs[i], passMs, this.stage.config.nEmbd)) {
        again.push(p);
        continue;
      }
      let r: StageResult;
      try {
        r = this.finish(p, outs[i], t0);
      } catch (e) {
        p.reject(e);
        continue;
      }
      if (r.kind === "token" && live.length === 1) {
        try {
          const more = await this.ahead.run(p, r.token.id, r.computeMs, this.waiting.length > 0);
          if (more.length) {
            this.steps += more.length;
            // Its rows count in the stage's metrics like any pass's (one row per token).
            this.passes++;
            this.onStep?.({ computeMs: this.ahead.lastMs, rows: more.length, sequences: 1 });
            r = { ...r, more, computeMs: performance.now() - t0 };
          }
        } catch (e) {
          // The frame's own token was fine, but the session's cache is now ahead of it.
          if (isBackendFailure(e, this.stage.backend.name)) this.opts.onFailure?.(e);
          p.reject(
            new StageSessionError(
              `stage [${this.stage.from}, ${this.stage.to}) failed decoding ahead: ${
                (e as Error).message
              }`,
              "unavailable",
            ),
          );
          continue;
        }
      }
      p.resolve(r);
    }
    this.waiting.unshift(...again);
  }

  /**
   * Turn a stage output into the frame's result (sampling at the tail). Its computeMs runs from
   * `t0` to the token: the tail's sampling is compute too (on the 110M model's 32000-entry rows
   * it is ~0.5 ms, which a head measuring hop latency as round trip − compute would otherwise
   * count as the network's).
   */
  private finish(
    p: PendingStep,
    out: StageOutput | { candidates: TopCandidates },
    t0: number,
  ): StageResult {
    this.steps++;
    const computeMs = p.ms + performance.now() - t0;
    if ("hidden" in out) return { kind: "hidden", hidden: p.hidden ?? out.hidden, computeMs };
    const sampler = p.hosted.sampler;
    if (p.frame.partial) {
      // Penalties count the whole prompt, so its every chunk goes into the history.
      if (sampler && !p.accepted) sampler.accept(p.frame.tokens);
      return { kind: "prefilled", computeMs };
    }
    if (!sampler) {
      if (!("logits" in out)) throw new Error("a stage without a sampler read candidates");
      return { kind: "logits", logits: out.logits, computeMs };
    }
    const token = sampleFrame(p, sampler, out);
    return { kind: "token", token, computeMs: p.ms + performance.now() - t0 };
  }
}
