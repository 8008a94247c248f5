/**
 * A stage as an agent serves it: a loaded `LlamaStage` plus the sessions (KV caches, tail
 * samplers) that heads open on it. Transport-free: the Forward RPC handler and in-process links
 * both call `step`.
 */
import type { KVType } from "../../kernels/backend.ts";
import type { LlamaStage, Session } from "../../model/llama.ts";
import {
  logSoftmax,
  Sampler,
  type SamplerParams,
  type TokenLogprob,
  topLogprobs,
} from "../../model/sampler.ts";

/** Sampler settings for the tail, plus how many alternatives to report. */
export interface TailSampling extends SamplerParams {
  topLogprobs?: number;
}

/** One frame entering a stage: token ids (head) or hidden rows (others), in order. */
export interface StageFrame {
  /** Token id of every row; the head embeds them, the tail feeds them to the penalty history. */
  tokens: Int32Array;
  /** Hidden rows `[tokens.length × nEmbd]`; absent at the head. */
  hidden?: Float32Array;
  /** Tail only: sample the last row with these settings. Absent: answer hidden rows / logits. */
  sampling?: TailSampling;
}

/** A token the tail sampled, with its log-probability and alternatives. */
export interface SampledToken {
  id: number;
  logprob: number;
  top: TokenLogprob[];
}

/** What a stage answers for one frame. */
export type StageResult =
  | { kind: "hidden"; hidden: Float32Array; computeMs: number }
  | { kind: "token"; token: SampledToken; computeMs: number }
  | { kind: "logits"; logits: Float32Array; computeMs: number };

/** A session id is unknown, already open, or the stage is full; the message says which. */
export class StageSessionError extends Error {
  override name = "StageSessionError";
  constructor(message: string, readonly code: "not_found" | "exists" | "exhausted" | "invalid") {
    super(message);
  }
  /** Status for the RPC layer (cluster/rpc maps it to a ConnectError code). */
  get rpcCode(): string {
    return {
      not_found: "not_found",
      exists: "already_exists",
      exhausted: "resource_exhausted",
      invalid: "invalid_argument",
    }[this.code];
  }
}

interface HostedSession {
  session: Session;
  sampler?: Sampler;
  samplerKey?: string;
  lastUsed: number;
}

/** Options for a StageHost. */
export interface StageHostOptions {
  /** Most sessions held at once (each owns a KV cache); default 64. */
  maxSessions?: number;
  /** Default context per session; default min(model context, 2048). */
  defaultContext?: number;
  kvType?: KVType;
}

/** Serves one loaded stage to many sessions, one forward pass at a time. */
export class StageHost {
  private readonly sessions = new Map<string, HostedSession>();
  /** Forward passes share the stage's workspace, so they run one after another. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly maxSessions: number;
  private readonly defaultContext: number;
  private readonly kvType: KVType;
  /** Steps served, for metrics. */
  steps = 0;

  constructor(readonly stage: LlamaStage, readonly model: string, opts: StageHostOptions = {}) {
    this.maxSessions = opts.maxSessions ?? 64;
    this.defaultContext = opts.defaultContext ?? Math.min(stage.config.contextLength, 2048);
    this.kvType = opts.kvType ?? "f32";
  }

  /** Layers [from, to) this host runs. */
  get range(): { from: number; to: number } {
    return { from: this.stage.from, to: this.stage.to };
  }

  /** Number of open sessions. */
  get openSessions(): number {
    return this.sessions.size;
  }

  /** Open a session with a KV cache for `maxContext` positions (0 = default). */
  open(sessionId: string, maxContext = 0): void {
    if (!sessionId) throw new StageSessionError("session id is empty", "invalid");
    if (this.sessions.has(sessionId)) {
      throw new StageSessionError(`session ${sessionId} is already open`, "exists");
    }
    if (this.sessions.size >= this.maxSessions) {
      throw new StageSessionError(
        `stage [${this.stage.from}, ${this.stage.to}) holds ${this.maxSessions} sessions already; retry later`,
        "exhausted",
      );
    }
    const nCtx = maxContext > 0
      ? Math.min(maxContext, this.stage.config.contextLength)
      : this.defaultContext;
    this.sessions.set(sessionId, {
      session: this.stage.newSession(nCtx, this.kvType),
      lastUsed: Date.now(),
    });
  }

  /** Free a session's KV cache; unknown ids are ignored (close is idempotent). */
  close(sessionId: string): void {
    const s = this.sessions.get(sessionId);
    if (!s) return;
    this.sessions.delete(sessionId);
    this.stage.endSession(s.session);
  }

  /** Close every session (the stage is being replaced or shut down). */
  closeAll(): void {
    for (const id of [...this.sessions.keys()]) this.close(id);
  }

  /** Run one frame of a session through the stage. */
  step(sessionId: string, frame: StageFrame): Promise<StageResult> {
    const run = this.queue.then(() => this.run(sessionId, frame));
    // Keep the chain alive after failures: one bad frame must not poison other sessions.
    this.queue = run.catch(() => {});
    return run;
  }

  private async run(sessionId: string, frame: StageFrame): Promise<StageResult> {
    const hosted = this.sessions.get(sessionId);
    if (!hosted) {
      throw new StageSessionError(`session ${sessionId} is not open on this stage`, "not_found");
    }
    hosted.lastUsed = Date.now();
    const t0 = performance.now();
    const out = this.stage.isHead
      ? await this.stage.forward(hosted.session, { tokens: frame.tokens })
      : await this.stage.forward(hosted.session, {
        hidden: frame.hidden ?? new Float32Array(0),
        nTokens: frame.tokens.length,
      });
    this.steps++;
    if ("hidden" in out) {
      return { kind: "hidden", hidden: out.hidden, computeMs: performance.now() - t0 };
    }
    if (!frame.sampling) {
      return { kind: "logits", logits: out.logits, computeMs: performance.now() - t0 };
    }
    const sampler = this.samplerFor(hosted, frame.sampling);
    sampler.accept(frame.tokens);
    const penalised = sampler.penalisedLogits(out.logits);
    const id = sampler.pick(out.logits);
    const lp = logSoftmax(penalised);
    const top = frame.sampling.topLogprobs
      ? topLogprobs(penalised, frame.sampling.topLogprobs)
      : [];
    return {
      kind: "token",
      token: { id, logprob: lp[id], top },
      computeMs: performance.now() - t0,
    };
  }

  private samplerFor(hosted: HostedSession, params: TailSampling): Sampler {
    const key = JSON.stringify(params);
    if (!hosted.sampler || hosted.samplerKey !== key) {
      // A sampler keeps the penalty history; settings are fixed for a session's lifetime.
      if (hosted.sampler) {
        throw new StageSessionError("sampler settings changed mid-session", "invalid");
      }
      hosted.sampler = new Sampler({ temperature: 0.8, ...params });
      hosted.samplerKey = key;
    }
    return hosted.sampler;
  }
}
