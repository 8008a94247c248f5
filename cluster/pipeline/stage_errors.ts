/**
 * How a chain's failures are told apart and attributed: a stage gone (re-place it and replay),
 * a stale placement (read the chain again, blaming nobody), a full stage, no placement at all;
 * and the one failure a head recognises by its text, a stage closing a session because gossip
 * declared its opener gone.
 *
 * @module
 */
import { exhaustionMessage, isLocalExhaustion } from "../net/exhaustion.ts";

/** A stage is gone (connection broken, agent dead, session lost): recoverable by re-placing. */
export class StageLinkError extends Error {
  override name = "StageLinkError";
  /** @param nodeId the stage that failed (not the one that noticed) */
  constructor(message: string, readonly nodeId: string) {
    super(message);
  }
}

/**
 * The tail answered a frame along the chain but its token did not come on the reply stream to
 * the head: the path from the tail to the head failed, not (as far as the head can tell) the
 * chain. The head replays on the same chain with tokens coming back along it, and blames the
 * tail only if that fails too.
 */
export class ReplyStreamError extends StageLinkError {
  override name = "ReplyStreamError";
}

/**
 * A stage planned with another placement epoch than the head's: gossip has not converged yet.
 * The head waits and reads the chain again, without blaming the stage.
 */
export class StaleEpochError extends Error {
  override name = "StaleEpochError";
  /** FAILED_PRECONDITION on the wire. */
  readonly rpcCode = "failed_precondition";
  /** @param nodeId the stage that refused */
  constructor(message: string, readonly nodeId: string) {
    super(message);
  }
}

/**
 * A stage refused to open a session because it holds as many as it may. A replay waits and
 * tries again (its client has output already); a new request passes it on as RESOURCE_EXHAUSTED.
 */
export class StageBusyError extends Error {
  override name = "StageBusyError";
  readonly rpcCode = "resource_exhausted";
  /** @param nodeId the stage that is full */
  constructor(message: string, readonly nodeId: string) {
    super(message);
  }
}

/** Whether `e` says a stage (here or over RPC) had no room for another session. */
export function isStageBusy(e: unknown): boolean {
  const err = e as { name?: string; code?: unknown };
  return e instanceof StageBusyError ||
    (err?.name === "StageSessionError" && err.code === "exhausted");
}

/**
 * This agent ran out of file descriptors (or socket buffers) reaching a stage: its own failure,
 * not the stage's. Blamed on the stage, a healthy peer was excluded and its layers re-placed,
 * and the request failed anyway ("stage on b failed (connect EMFILE)"). Clients see UNAVAILABLE
 * (HTTP 503): the agent recovers once descriptors are free.
 */
export class LocalExhaustionError extends Error {
  override name = "LocalExhaustionError";
  readonly rpcCode = "unavailable";
  /** @param nodeId the stage it was reaching @param cause the local error */
  constructor(readonly nodeId: string, cause: unknown) {
    super(exhaustionMessage(`reach the stage on ${nodeId}`, cause), { cause });
  }
}

/**
 * `e` as this agent's failure when it is a local descriptor shortage ({@linkcode
 * isLocalExhaustion}), else undefined.
 */
export function localExhaustion(nodeId: string, e: unknown): LocalExhaustionError | undefined {
  if (e instanceof LocalExhaustionError) return e;
  return isLocalExhaustion(e) ? new LocalExhaustionError(nodeId, e) : undefined;
}

/** No chain of live stages covers the model; the message names the missing layers. */
export class NoPlacementError extends Error {
  override name = "NoPlacementError";
  /** Clients see UNAVAILABLE (HTTP 503): the cluster may recover when agents join. */
  readonly rpcCode = "unavailable";
}

/** The key a head excludes a failed stage by: its node and the announcement that failed. */
export function stageKey(nodeId: string, version?: number | string): string {
  return `${nodeId}@${version ?? ""}`;
}

/**
 * Run a call on the stage `nodeId` (or through it), turning a transport failure into a
 * StageLinkError naming it; errors already attributed to a stage further down pass unchanged.
 */
export async function guard<T>(nodeId: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof StageLinkError || e instanceof StaleEpochError) throw e;
    // Out of descriptors here: not the stage's failure, whatever the call's status says.
    const local = localExhaustion(nodeId, e);
    if (local) throw local;
    if (isTransportFailure(e)) throw new StageLinkError((e as Error).message, nodeId);
    throw e;
  }
}

/**
 * What a stage says when it closes a session because gossip declared `opener` (the stage or
 * head before it) gone; {@linkcode goneOpener} reads the id back. The failure reaches heads as
 * a message only (a stream's status, relayed up the chain), so the two stay side by side.
 */
export function openerGoneMessage(opener: string): string {
  return `${opener}, which opened this stream, is gone (gossip): the session is closed`;
}

/**
 * The node a stage closed a session for because gossip declared it gone, when `message` says
 * so (openerGoneMessage, anywhere in it); else undefined. Node ids are letters, digits, '.',
 * '_' and '-' (agent_config.ts).
 */
export function goneOpener(message: string): string | undefined {
  return /(?:^|[^A-Za-z0-9._-])([A-Za-z0-9._-]+), which opened this stream, is gone \(gossip\)/
    .exec(message)?.[1];
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
