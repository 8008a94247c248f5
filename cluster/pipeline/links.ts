/**
 * What a chain is made of, as the head and every stage see it: hops, the opening of a session,
 * the link to a stage (a stream to another agent, or a call in this process) and the session
 * on it. Transport-free; remote_link.ts and local_link.ts implement a link.
 *
 * @module
 */
import type { StageFrame, StageResult, TailSampling } from "./stage_frame.ts";

/** One stage of a chain as a message can name it. */
export interface ChainHop {
  readonly nodeId: string;
  readonly from: number;
  readonly to: number;
  /** Which announcement of the node (gossip incarnation); see StageLink.version. */
  readonly version?: number;
}

/**
 * The session id of a head's try at a request: the request id, a nonce of the head's run (a
 * client may retry under the same request id while a stage still holds the first try's
 * session), the attempt (stage failures) and the retry (stale epochs, full replicas).
 */
export function headSessionId(requestId: string, run: string, attempt: number, stale: number) {
  return `${requestId}.${run}.${attempt}.${stale}`;
}

/** The request id of a session id made by {@linkcode headSessionId}; undefined for another. */
export function requestOfSession(sessionId: string): string | undefined {
  return /^(.+)\.[0-9a-f]{8}\.\d+\.\d+$/.exec(sessionId)?.[1];
}

/** What opening a session on a stage needs; the stage opens the rest of the chain with it. */
export interface SessionOpen {
  /** Unique per request and placement attempt; names the KV cache on every stage. */
  sessionId: string;
  /** KV cache positions to reserve. */
  maxContext: number;
  /** Model id the head planned with; a stage serving another refuses. */
  model: string;
  /** Placement epoch the head planned with (0 = unchecked); a stage on another refuses. */
  epoch: bigint;
  /** Sampling settings for the tail, sent once; absent: the tail answers logits. */
  sampling?: TailSampling;
  /** The stages after this one, in layer order (empty: this is the tail). */
  downstream: ChainHop[];
  /**
   * The prompt's token ids for the prefix cache: each stage with one restores the longest
   * prefix it holds into the new session (absent: no lookup).
   */
  prefixIds?: Int32Array;
  /** The head opened a reply stream to the tail (replies.ts): the tail sends tokens there. */
  replyDirect?: boolean;
}

/** The head's end of a reply stream from the tail: the session's tokens, in order. */
export interface ReplyStream {
  next(): Promise<StageResult>;
  close(): void;
}

/** An open session on a stage and everything after it. */
export interface SessionLink {
  /**
   * Positions of the opening's `prefixIds` restored from the prefix cache on this stage and
   * every stage after it (the least of them; 0 or absent: none): the first frame then starts
   * there (StageFrame.cachedPrefix) and carries only the rest of the prompt.
   */
  readonly cachedTokens?: number;
  /** Send one frame, get its one answer (in order): the tail's token. */
  step(frame: StageFrame): Promise<StageResult>;
  /** Free the session on this stage and those after it; never throws. */
  close(reason: string): Promise<void>;
}

/** One stage of a chain as the head (or the stage before it) sees it. */
export interface StageLink extends ChainHop {
  /**
   * Which announcement of the node this link came from; after a failure the head avoids that
   * node until it announces again (e.g. reloaded on another backend).
   */
  readonly version?: number;
  /** Open a session here; this stage opens the downstream ones. */
  openSession(open: SessionOpen): Promise<SessionLink>;
  /** The stage runs in the head's own process (no network between them). */
  readonly local?: boolean;
  /**
   * As the tail of a chain: a stream on which this stage will send session `sessionId`'s tokens
   * straight to the head (replies.ts); undefined where it cannot (no data plane, mTLS).
   */
  openReplies?(sessionId: string): Promise<ReplyStream | undefined>;
}

/** Finds a chain of live stages covering every layer. */
export interface ChainProvider {
  /**
   * The current chain, in layer order, avoiding `exclude`d nodes; waits up to `timeoutMs` for
   * one to exist (stages being re-placed and loaded). Throws NoPlacementError when none appears.
   */
  chain(
    opts: { exclude: ReadonlySet<string>; timeoutMs: number; signal?: AbortSignal },
  ): Promise<StageLink[]>;
  /** The placement epoch this head plans with (0 or absent: stages do not check it). */
  epoch?(): bigint;
  /** The model id sessions are opened for ("" or absent: not checked). */
  readonly model?: string;
  /**
   * A stage of the chain last given had no room for the session: later chains avoid its route
   * while another one stands. Returns whether one does (false: every route is full, or there are
   * no routes to choose from).
   */
  busy?(): boolean;
}
