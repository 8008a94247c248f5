/**
 * Tokens straight from the tail to the head (the tail's side, and the head's stream; the head's
 * use of it, withReplies, below). Along the chain a token used to travel back stage
 * by stage (C → B → A → head): one crossing and one relay per stage. With a reply stream the
 * head opens to the tail before the session (the data plane's `DLR1` protocol), the tail sends
 * each token there, and answers the frame along the chain with a small `replied`, which the
 * stages relay off the token's path. Failures still come back along the chain, attributed to
 * the stage that failed, so the head re-places exactly as before.
 *
 * Only over the TCP data plane (no TLS): under mTLS, or when the tail cannot be reached, tokens
 * come back along the chain.
 */
import { create } from "@bufbuild/protobuf";
import {
  type ActivationFrame,
  ActivationFrameSchema,
  type ForwardResponse,
  ForwardResponseSchema,
} from "../../proto/mod.ts";
import {
  MessageQueue,
  openTcpBidi,
  type PlaneProtocol,
  RpcFailure,
  serveTcpBidi,
} from "../rpc/mod.ts";
import type { ReplyStream, SessionLink } from "./links.ts";
import type { SampledToken, StageFrame, StageResult } from "./stage_frame.ts";
import { ReplyStreamError } from "./stage_errors.ts";
import { resultFromWire, tokenToWire } from "./wire.ts";
import { orTimeout, settleWithin } from "../deadline.ts";

/** The reply stream's preamble on the TCP data plane (cluster/rpc/tcp_plane.ts). */
export const REPLIES_PREAMBLE = "DLR1";

/** Reply streams are `ActivationFrame` (the session) in, `ForwardResponse` (tokens) out. */
const REPLIES_METHOD = { input: ActivationFrameSchema, output: ForwardResponseSchema };

/** Where a tail sends a session's tokens. */
export interface ReplySink {
  send(token: SampledToken, computeMs: number): void;
  /** The session ended: the stream ends too. */
  end(): void;
  /** Its session took it (the stream no longer waits to be claimed). */
  claim?(): void;
}

/** The reply streams heads have opened to this agent, by session, until the session takes one. */
export class ReplySinks {
  readonly #waiting = new Map<string, ReplySink>();
  #sent = 0;

  /** Tokens sent on reply streams so far (metrics). */
  get sent(): number {
    return this.#sent;
  }

  /**
   * A head's stream for `sessionId`; returns the unregistering. The first stream for a session
   * keeps it: a second one (another client naming the same session) is refused, not swapped in.
   */
  register(sessionId: string, sink: ReplySink): () => void {
    if (this.#waiting.has(sessionId)) {
      throw new RpcFailure("already_exists", `a reply stream for ${sessionId} is open already`);
    }
    this.#waiting.set(sessionId, sink);
    return () => {
      if (this.#waiting.get(sessionId) === sink) this.#waiting.delete(sessionId);
    };
  }

  /** The stream for a session opening on this tail (taken: one session, one stream). */
  take(sessionId: string): ReplySink | undefined {
    const sink = this.#waiting.get(sessionId);
    if (!sink) return undefined;
    this.#waiting.delete(sessionId);
    sink.claim?.();
    return {
      send: (token, computeMs) => {
        this.#sent++;
        sink.send(token, computeMs);
      },
      end: () => sink.end(),
    };
  }

  /** Streams waiting for their session. */
  get size(): number {
    return this.#waiting.size;
  }
}

/** A token result as the wire carries it. */
function tokenResponse(sessionId: string, token: SampledToken, computeMs: number) {
  return create(ForwardResponseSchema, {
    sessionId,
    computeMs,
    result: { case: "token", value: tokenToWire(token) },
  });
}

/**
 * The tail side: a head's stream names its session in its first message, is answered once when
 * registered, then gets the session's tokens until the session ends or the head goes away.
 * `maxStreams` bounds them (as Forward streams are bounded).
 */
export function repliesProtocol(
  sinks: ReplySinks,
  maxStreams = 1024,
  /** A stream whose session never opens is ended after this long. */
  unclaimedMs = 60_000,
  /** A connection that names no session within this long is ended (it holds a slot). */
  firstMessageMs = 10_000,
): PlaneProtocol {
  return {
    maxConnections: maxStreams,
    serve: (conn) => serveTcpBidi(conn, REPLIES_METHOD, replies, 1 << 16),
  };
  async function* replies(frames: AsyncIterable<ActivationFrame>) {
    const it = frames[Symbol.asyncIterator]();
    // A head names its session at once; a connection that says nothing holds no slot for long.
    const first = await orTimeout(
      it.next(),
      firstMessageMs,
      () => new RpcFailure("deadline_exceeded", `no session named within ${firstMessageMs} ms`),
    );
    if (first.done) return;
    const sessionId = first.value.sessionId;
    if (!sessionId) throw new RpcFailure("invalid_argument", "a reply stream names its session");
    const queue = new MessageQueue<ForwardResponse>();
    // A head that never opens the session (it failed first) must not leave the stream here;
    // once the session took it, the stream lives as long as the session (a long prompt's first
    // token may take minutes).
    const timer = setTimeout(() => queue.end(), unclaimedMs);
    let unregister: () => void;
    try {
      unregister = sinks.register(sessionId, {
        send: (token, computeMs) => queue.push(tokenResponse(sessionId, token, computeMs)),
        end: () => queue.end(),
        claim: () => clearTimeout(timer),
      });
    } catch (e) {
      clearTimeout(timer);
      throw e;
    }
    // The head half-closes (or goes away) when it is done: the stream ends.
    it.next().then(() => queue.end(), () => queue.end());
    try {
      yield create(ForwardResponseSchema, { sessionId });
      for await (const r of queue) yield r;
    } finally {
      clearTimeout(timer);
      unregister();
    }
  }
}

/**
 * Open a reply stream to the tail's data plane at `endpoint` for `sessionId` (registered), or
 * fail within `timeoutMs` (a firewall dropping the port must not hold the request: its tokens
 * then come along the chain).
 */
export async function openReplyStream(
  endpoint: string,
  sessionId: string,
  timeoutMs = 2000,
): Promise<ReplyStream> {
  let late = false;
  const opening = (async () => {
    const call = await openTcpBidi(endpoint, REPLIES_PREAMBLE, REPLIES_METHOD, 64 << 20);
    call.send(create(ActivationFrameSchema, { sessionId }));
    try {
      if (!(await call.receive())) throw new Error("the tail ended the reply stream");
      if (late) throw new Error("opened too late");
    } catch (e) {
      call.abort();
      throw e;
    }
    return call;
  })();
  opening.catch(() => {}); // read below; a late one is aborted above
  const call = await orTimeout(opening, timeoutMs, () => {
    late = true;
    return new Error(`no reply stream from ${endpoint} within ${timeoutMs} ms`);
  });
  return {
    async next() {
      const r = await call.receive();
      if (!r || r.result.case !== "token") throw new Error("the tail's reply stream ended");
      return resultFromWire(r);
    },
    close() {
      call.end();
      call.abort();
    },
  };
}

/**
 * A session whose tail replies straight to the head: each frame's token comes from `replies`;
 * the answer along the chain is `replied` (or a failure naming the stage that failed, which
 * wins). A reply stream that breaks while the chain says "replied" is the tail's failure.
 */
export function withReplies(
  link: SessionLink,
  replies: ReplyStream,
  tailNodeId: string,
  /** Most ms a token may lag behind the chain's `replied` for it (then the tail is blamed). */
  lagMs = 10_000,
): SessionLink {
  /**
   * The answer along the chain to the last frame whose token came first: it may still bring
   * the failure of a stage (naming it) after the head has moved on.
   */
  let previous: Promise<void> | undefined;
  let failure: unknown;
  /** The token of a frame the chain says was replied, within `lagMs`. */
  const lagging = (reply: Promise<StageResult>) =>
    orTimeout(reply, lagMs, () => new Error(`no token ${lagMs / 1000} s after the chain's answer`));
  return {
    cachedTokens: link.cachedTokens,
    async step(frame: StageFrame): Promise<StageResult> {
      if (failure) throw failure;
      const ack = link.step(frame);
      if (frame.partial) return await ack;
      const reply = replies.next();
      // Both are read below, whichever settles first; never left to reject unhandled.
      ack.catch(() => {});
      reply.catch(() => {});
      try {
        const out = await Promise.race([
          reply,
          ack.then((a) => (a.kind === "replied" ? lagging(reply) : a)),
        ]);
        previous = ack.then(() => {}, (e) => void (failure ??= e));
        return out;
      } catch (e) {
        // An earlier frame's answer may carry the real failure (it came back after its token):
        // the stage it names is the one to re-place, not the one this frame's error blames.
        await settleWithin(previous, 2000);
        if (failure) throw failure;
        // This frame's answer says which stage failed; without one, the tail's stream did.
        const a = await ack;
        if (a.kind !== "replied") return a;
        throw new ReplyStreamError(
          `the tail's reply stream failed: ${(e as Error).message ?? e}`,
          tailNodeId,
        );
      }
    },
    async close(reason: string) {
      replies.close();
      await link.close(reason);
    },
  };
}
