/**
 * The head of a request: drives a chain of stages (layers 0..n) through prefill and decode, and
 * recovers when a stage dies by re-placing and replaying prompt + tokens so far — the client
 * sees a delay, and greedy output stays identical.
 *
 * Transport-free: stages are reached through `StageLink`s, which are RPC streams between agents
 * and direct calls for a stage in the same process.
 */
import type { StageFrame, StageResult, TailSampling } from "./stage_host.ts";
import type { SampledToken } from "./stage_host.ts";
import { stageKey } from "./gossip_chain.ts";
import { type OpenSpan, openSpan, SpanKind, withSpan } from "../telemetry/tracing.ts";

/** An open session on one stage. */
export interface SessionLink {
  /** Send one frame, get its one answer (in order). */
  step(frame: StageFrame): Promise<StageResult>;
  /** Free the session on the stage; never throws. */
  close(reason: string): Promise<void>;
}

/** One stage of a chain as the head sees it. */
export interface StageLink {
  readonly nodeId: string;
  /**
   * Which announcement of the node this link came from; after a failure the head avoids that
   * node until it announces again (e.g. reloaded on another backend).
   */
  readonly version?: number;
  readonly from: number;
  readonly to: number;
  openSession(sessionId: string, maxContext: number): Promise<SessionLink>;
}

/** Finds a chain of live stages covering every layer. */
export interface ChainProvider {
  /**
   * The current chain, in layer order, avoiding `exclude`d nodes; waits up to `timeoutMs` for
   * one to exist (stages being re-placed and loaded). Throws NoPlacementError when none appears.
   */
  chain(opts: { exclude: ReadonlySet<string>; timeoutMs: number }): Promise<StageLink[]>;
}

/** A stage is gone (connection broken, agent dead, session lost): recoverable by re-placing. */
export class StageLinkError extends Error {
  override name = "StageLinkError";
  constructor(message: string, readonly nodeId: string) {
    super(message);
  }
}

/** No chain of live stages covers the model; the message names the missing layers. */
export class NoPlacementError extends Error {
  override name = "NoPlacementError";
  /** Clients see UNAVAILABLE (HTTP 503): the cluster may recover when agents join. */
  readonly rpcCode = "unavailable";
}

/** A generation request as the head runs it. */
export interface HeadRequest {
  requestId: string;
  promptTokens: number[];
  maxTokens: number;
  /** Tail sampling; the head fixes a seed when none is given so replays draw the same. */
  sampling: TailSampling;
  /** True for end-of-generation tokens; generation stops after one unless ignoreEog. */
  isEog: (id: number) => boolean;
  ignoreEog?: boolean;
  maxContext: number;
  /** Called for each token as it is sampled; return false to stop (stop string, cancel). */
  onToken?: (token: SampledToken, index: number) => boolean | void;
  /** Aborts the generation between steps. */
  signal?: AbortSignal;
}

/** What a generation produced, with the events that shaped it. */
export interface HeadResult {
  tokens: SampledToken[];
  finishReason: "stop" | "length" | "cancelled" | "stopped";
  /** Chains used, in order (more than one when a stage failed). */
  chains: { nodeId: string; from: number; to: number }[][];
  /** Stages that failed during the request. */
  failures: { nodeId: string; message: string }[];
  timeToFirstTokenMs: number;
  decodeMs: number;
}

/** Head settings. */
export interface HeadOptions {
  /** How long to wait for a chain after a failure before giving up. Default 30 s. */
  recoveryTimeoutMs?: number;
  /**
   * How long a request waits for a complete chain at its start (stages still loading or
   * announcements still gossiping). Default 10 s.
   */
  initialWaitMs?: number;
  /** Most re-plans per request. Default 8. */
  maxRecoveries?: number;
  /** Log hook for recoveries. */
  log?: (msg: string) => void;
}

/** Runs requests over chains from a ChainProvider. */
export class Head {
  constructor(private readonly provider: ChainProvider, private readonly opts: HeadOptions = {}) {}

  /** Generate tokens for `req`, recovering from stage failures (traced as `llm.request`). */
  generate(req: HeadRequest): Promise<HeadResult> {
    return withSpan("llm.request", {
      "llm.request_id": req.requestId,
      "llm.prompt_tokens": req.promptTokens.length,
    }, () => this.run(req));
  }

  private async run(req: HeadRequest): Promise<HeadResult> {
    const sampling: TailSampling = {
      ...req.sampling,
      seed: req.sampling.seed ?? Math.floor(Math.random() * 2 ** 32),
    };
    const result: HeadResult = {
      tokens: [],
      finishReason: "length",
      chains: [],
      failures: [],
      timeToFirstTokenMs: 0,
      decodeMs: 0,
    };
    const exclude = new Set<string>();
    const t0 = performance.now();
    let tFirst = 0;
    let attempt = 0;
    const budget = Math.min(req.maxTokens, req.maxContext - req.promptTokens.length);
    if (budget <= 0) {
      throw new RangeError(
        `the prompt's ${req.promptTokens.length} tokens leave no room in a ${req.maxContext}-token context`,
      );
    }
    for (;;) {
      let chain: StageLink[];
      try {
        chain = await this.provider.chain({
          exclude,
          timeoutMs: attempt === 0
            ? this.opts.initialWaitMs ?? 10_000
            : this.opts.recoveryTimeoutMs ?? 30_000,
        });
      } catch (e) {
        // After a stage failed, its cause (refused certificate, reset stream) is what the user
        // can act on; "no live agent" alone would blame the cluster's size.
        const last = result.failures.at(-1);
        if (!(e instanceof NoPlacementError) || !last) throw e;
        throw new NoPlacementError(
          `${e.message}; the stage on ${last.nodeId} failed: ${last.message}`.slice(0, 1024),
        );
      }
      result.chains.push(chain.map(({ nodeId, from, to }) => ({ nodeId, from, to })));
      const sessionId = `${req.requestId}.${attempt}`;
      const links: SessionLink[] = [];
      let decode: OpenSpan | undefined;
      try {
        for (const stage of chain) {
          links.push(await guard(stage.nodeId, () => stage.openSession(sessionId, req.maxContext)));
        }
        // Prefill: prompt plus whatever was generated before a failure (replay).
        let input = [...req.promptTokens, ...result.tokens.map((t) => t.id)];
        while (result.tokens.length < budget) {
          if (req.signal?.aborted) {
            result.finishReason = "cancelled";
            break;
          }
          const pass = () => this.pass(chain, links, Int32Array.from(input), sampling);
          const token = decode
            ? await decode.run(pass)
            : await withSpan("llm.prefill", { "llm.tokens": input.length }, pass);
          if (!tFirst) tFirst = performance.now();
          const index = result.tokens.length;
          result.tokens.push(token);
          if (req.onToken?.(token, index) === false) {
            result.finishReason = "stopped";
            break;
          }
          if (!req.ignoreEog && req.isEog(token.id)) {
            result.finishReason = "stop";
            break;
          }
          input = [token.id];
          decode ??= openSpan("llm.decode");
        }
        decode?.end();
        await Promise.all(links.map((l) => l.close("done")));
        result.timeToFirstTokenMs = tFirst - t0;
        result.decodeMs = performance.now() - tFirst;
        return result;
      } catch (e) {
        decode?.end(e);
        await Promise.all(links.map((l) => l.close("replanned")));
        if (!(e instanceof StageLinkError)) throw e;
        attempt++;
        result.failures.push({ nodeId: e.nodeId, message: e.message });
        const failed = chain.find((s) => s.nodeId === e.nodeId);
        exclude.add(stageKey(e.nodeId, failed?.version));
        this.opts.log?.(
          `request ${req.requestId}: stage on ${e.nodeId} failed (${e.message}); ` +
            `re-placing and replaying ${req.promptTokens.length + result.tokens.length} tokens`,
        );
        if (attempt > (this.opts.maxRecoveries ?? 8)) {
          throw new NoPlacementError(
            `gave up after ${attempt} stage failures; last: ${e.nodeId}: ${e.message}`,
          );
        }
      }
    }
  }

  /** One token through every stage: hidden rows hop stage to stage, the tail samples. */
  private async pass(
    chain: StageLink[],
    links: SessionLink[],
    tokens: Int32Array,
    sampling: TailSampling,
  ): Promise<SampledToken> {
    let hidden: Float32Array | undefined;
    for (let i = 0; i < chain.length; i++) {
      const tail = i === chain.length - 1;
      const out = await guard(
        chain[i].nodeId,
        () =>
          withSpan(
            "llm.forward",
            { "llm.stage.node": chain[i].nodeId, "llm.layers": `${chain[i].from}-${chain[i].to}` },
            () => links[i].step({ tokens, hidden, sampling: tail ? sampling : undefined }),
            SpanKind.CLIENT,
          ),
      );
      if (out.kind === "token") return out.token;
      if (out.kind !== "hidden") {
        throw new Error(`stage ${chain[i].nodeId} answered ${out.kind}, expected hidden rows`);
      }
      hidden = out.hidden;
    }
    throw new Error("the chain's last stage did not sample a token");
  }
}

/** Turn a stage's transport failure into StageLinkError naming the node. */
async function guard<T>(nodeId: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof StageLinkError) throw e;
    if (isTransportFailure(e)) throw new StageLinkError((e as Error).message, nodeId);
    throw e;
  }
}

/** Errors that mean "the stage is gone" rather than "the request is bad". */
export function isTransportFailure(e: unknown): boolean {
  const err = e as { name?: string; code?: unknown; message?: string };
  const code = (err as { code?: string }).code;
  // A session the stage no longer has, or a stage whose backend failed: re-place and replay.
  if (err?.name === "StageSessionError" && (code === "not_found" || code === "unavailable")) {
    return true;
  }
  return err?.name === "StageLinkError";
}
