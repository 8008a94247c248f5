/**
 * A stage's part of a chain: run a session's frames through the hosted layers and hand the
 * output rows straight to the next stage over a session this stage keeps open, or, at the
 * tail, sample. The token comes back along the chain as the answer to each frame. A failure
 * further down comes back attributed to the stage that failed, so the head knows whom to
 * re-place; this stage's own session is freed either way.
 *
 * A long prompt is pipelined: it goes down in chunks, each forwarded as soon as this stage has
 * run it, so the next stage works on chunk i while this one runs chunk i + 1 (vLLM and
 * llama.cpp's pipeline parallelism overlap micro-batches the same way). Every chunk but the
 * last is `partial`: the tail fills its KV cache and answers no token.
 */
import type { ChainHop, SessionLink, SessionOpen, StageLink } from "./links.ts";
import { guard, StaleEpochError } from "./stage_errors.ts";
import type { StageHost } from "./stage_host.ts";
import type { ReplySinks } from "./replies.ts";
import type { StageFrame, StageResult } from "./stage_frame.ts";
import { SpanKind, withSpan } from "../telemetry/tracing.ts";

/** Where a stage reaches the stages after it: a link per hop (local or remote). */
export type LinkFactory = (hop: ChainHop) => StageLink;

/** What a stage checks a session's opening against. */
export interface ChainStageContext {
  /** This stage's node id (named in the errors it reports). */
  nodeId: string;
  /** The placement epoch this agent plans with now (0n: none, nothing to check). */
  epoch(): bigint;
  /** Links to the stages after this one. */
  linkTo: LinkFactory;
  /** Rows per pipelined prompt chunk (default {@linkcode PREFILL_CHUNK_ROWS}; 0: none). */
  chunkRows?: number;
  /** Reply streams heads opened to this agent (replies.ts), for a session it is the tail of. */
  replies?: ReplySinks;
}

/**
 * Rows per prompt chunk a stage forwards while it runs the next. Smaller chunks overlap more
 * (k stages take (chunks + k − 1) chunk times instead of chunks × k) but run the matmuls on
 * fewer rows at a time; 64 rows keep the prompt kernels near their full speed.
 */
export const PREFILL_CHUNK_ROWS = 64;

/**
 * Rows per chunk a stage sends a whole (non-partial) frame down in, from its `chunkRows`
 * setting: a frame with more is run and forwarded chunk by chunk (Infinity: never).
 */
export function chunkRowsOf(setting: number | undefined): number {
  return setting === 0 ? Infinity : Math.max(1, setting ?? PREFILL_CHUNK_ROWS);
}

/**
 * The refusal of a stage that runs other layers than the session was opened for (it was chosen
 * by an announcement it has since replaced: a re-plan whose gossip has not reached the sender),
 * as a stale placement, so the head reads the chain again and blames nobody; undefined when the
 * ranges agree. `asked.to` undefined: not named (an older sender).
 */
export function staleRange(
  nodeId: string,
  runs: { from: number; to: number },
  asked: { from: number; to?: number },
): StaleEpochError | undefined {
  if (asked.from === runs.from && (asked.to === undefined || asked.to === runs.to)) return;
  return new StaleEpochError(
    `${nodeId} runs layers [${runs.from}, ${runs.to}), the session asked for ` +
      `[${asked.from}, ${asked.to ?? "…"}); re-read the placement`,
    nodeId,
  );
}

/** Open `open` on `host` and, through `ctx.linkTo`, on every stage after it. */
export async function openChainSession(
  host: StageHost,
  open: SessionOpen,
  ctx: ChainStageContext,
): Promise<SessionLink> {
  const epoch = ctx.epoch();
  if (open.epoch !== 0n && epoch !== 0n && open.epoch !== epoch) {
    throw new StaleEpochError(
      `${ctx.nodeId} plans with placement epoch ${epoch}, the session with ${open.epoch}; ` +
        `re-read the placement`,
      ctx.nodeId,
    );
  }
  const tail = open.downstream.length === 0;
  host.open(open.sessionId, open.maxContext, tail ? open.sampling : undefined);
  // At the tail, the head's reply stream: tokens go straight to the head on it.
  const sink = tail && open.replyDirect ? ctx.replies?.take(open.sessionId) : undefined;
  let own = 0;
  let next: SessionLink | undefined;
  const hop = open.downstream[0];
  try {
    // This stage's layers of the longest prefix it has cached; the chain starts at the least
    // any stage restored (the first frame's cachedPrefix), each keeping that much.
    if (open.prefixIds) own = host.restorePrefix(open.sessionId, open.prefixIds);
    if (hop) {
      next = await guard(
        hop.nodeId,
        () => ctx.linkTo(hop).openSession({ ...open, downstream: open.downstream.slice(1) }),
      );
    }
  } catch (e) {
    host.close(open.sessionId);
    sink?.end();
    throw e;
  }
  const span = hop ? { "llm.stage.node": hop.nodeId, "llm.layers": `${hop.from}-${hop.to}` } : {};
  const chunkRows = chunkRowsOf(ctx.chunkRows);
  /** This stage's layers on `frame`, then the rest of the chain's. */
  const whole = async (frame: StageFrame): Promise<StageResult> => {
    const out = await host.step(open.sessionId, frame);
    if (sink && out.kind === "token" && !out.more?.length) {
      sink.send(out.token, out.computeMs);
      return { kind: "replied", computeMs: out.computeMs };
    }
    if (!next || out.kind !== "hidden") return out;
    const down = await forward(frame, out.hidden);
    // The compute of every stage on the way, so a head can tell hop latency from compute.
    return { ...down, computeMs: down.computeMs + out.computeMs };
  };
  const forward = (frame: StageFrame, hidden: Float32Array) =>
    withSpan(
      "llm.forward",
      span,
      () =>
        guard(
          hop.nodeId,
          () =>
            next!.step({
              tokens: frame.tokens,
              hidden,
              partial: frame.partial,
              ...(frame.cachedPrefix ? { cachedPrefix: frame.cachedPrefix } : {}),
            }),
        ),
      SpanKind.CLIENT,
    );
  /** A prompt in chunks: each goes down the chain while this stage runs the next. */
  const pipelined = async (frame: StageFrame): Promise<StageResult> => {
    const rows = frame.tokens.length;
    const width = frame.hidden ? frame.hidden.length / rows : 0;
    const answers: Promise<StageResult>[] = [];
    /** The first chunk answer to fail (a failure stops the chunks not yet run). */
    let failure: { error: unknown } | undefined;
    let ownMs = 0;
    try {
      for (let at = 0; at < rows && !failure; at += chunkRows) {
        const end = Math.min(rows, at + chunkRows);
        const chunk: StageFrame = {
          tokens: frame.tokens.subarray(at, end),
          hidden: frame.hidden?.subarray(at * width, end * width),
          partial: end < rows,
          ...(at === 0 && frame.cachedPrefix ? { cachedPrefix: frame.cachedPrefix } : {}),
        };
        const out = await host.step(open.sessionId, chunk);
        ownMs += out.computeMs;
        if (out.kind !== "hidden") throw new Error(`a stage before the tail answered ${out.kind}`);
        const answer = forward(chunk, out.hidden);
        // Read below; never left to reject unhandled.
        answer.catch((e) => (failure ??= { error: e }));
        answers.push(answer);
      }
    } catch (e) {
      // This stage failed on a chunk: the chunks already sent are answered when the session
      // closes, which the caller does next; waiting for them here would wait on that close.
      // A failure further down that came first is the one to report.
      throw failure ? failure.error : e;
    }
    // The earliest chunk that failed says which stage did.
    const settled = await Promise.allSettled(answers);
    const bad = settled.find((r) => r.status === "rejected");
    if (bad) throw (bad as PromiseRejectedResult).reason;
    const results = settled.map((r) => (r as PromiseFulfilledResult<StageResult>).value);
    const last = results.at(-1)!;
    const downMs = results.reduce((a, r) => a + r.computeMs, 0);
    return { ...last, computeMs: ownMs + downMs };
  };
  return {
    cachedTokens: next ? Math.min(own, next.cachedTokens ?? 0) : own,
    // A partial frame (a chunk from the stage before) goes on as it came: chunking it again
    // would let its pieces interleave with the next chunk's in this stage's queue.
    step: (frame: StageFrame): Promise<StageResult> =>
      next && !frame.partial && frame.tokens.length > chunkRows ? pipelined(frame) : whole(frame),
    close: async (reason: string) => {
      host.close(open.sessionId);
      sink?.end();
      await next?.close(reason);
    },
  };
}
