/**
 * A stage's part of a chain: run a session's frames through the hosted layers and hand the
 * output rows straight to the next stage over a session this stage keeps open, or, at the
 * tail, sample. The token comes back along the chain as the answer to each frame. A failure
 * further down comes back attributed to the stage that failed, so the head knows whom to
 * re-place; this stage's own session is freed either way.
 */
import {
  type ChainHop,
  guard,
  type SessionLink,
  type SessionOpen,
  type StageLink,
  StaleEpochError,
} from "./head.ts";
import type { StageFrame, StageHost, StageResult } from "./stage_host.ts";
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
  let next: SessionLink | undefined;
  const hop = open.downstream[0];
  if (hop) {
    try {
      next = await guard(
        hop.nodeId,
        () => ctx.linkTo(hop).openSession({ ...open, downstream: open.downstream.slice(1) }),
      );
    } catch (e) {
      host.close(open.sessionId);
      throw e;
    }
  }
  const span = hop ? { "llm.stage.node": hop.nodeId, "llm.layers": `${hop.from}-${hop.to}` } : {};
  return {
    step: async (frame: StageFrame): Promise<StageResult> => {
      const out = await host.step(open.sessionId, frame);
      if (!next || out.kind !== "hidden") return out;
      const down = await withSpan(
        "llm.forward",
        span,
        () => guard(hop.nodeId, () => next!.step({ tokens: frame.tokens, hidden: out.hidden })),
        SpanKind.CLIENT,
      );
      // The compute of every stage on the way, so a head can tell hop latency from compute.
      return { ...down, computeMs: down.computeMs + out.computeMs };
    },
    close: async (reason: string) => {
      host.close(open.sessionId);
      await next?.close(reason);
    },
  };
}
