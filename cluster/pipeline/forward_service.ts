/**
 * InferenceService.Forward, the stage side: one bidirectional stream per session. The `open`
 * frame opens the session here and, through the agent's links, on every stage after this one;
 * each frame with rows runs through the hosted layers, goes on to the next stage, and is
 * answered with what the tail answered. A failure here or further down is answered with a
 * `failure` naming the stage that failed, and ends the stream.
 */
import { create } from "@bufbuild/protobuf";
import {
  type ActivationFrame,
  ActivationFrameSchema,
  Dtype,
  type ForwardResponse,
  ForwardResponseSchema,
  InferenceService,
  StageFailureSchema,
} from "../../proto/mod.ts";
import { type PlaneProtocol, RpcFailure, serveTcpBidi, WRITE_TIMEOUT_MS } from "../rpc/mod.ts";
import type { StageHost } from "./stage_host.ts";
import type { SessionLink } from "./links.ts";
import { openerGoneMessage, StageLinkError, StaleEpochError } from "./stage_errors.ts";
import { chunkRowsOf, type LinkFactory, openChainSession, staleRange } from "./chain_session.ts";
import type { ReplySinks } from "./replies.ts";
import { orTimeout } from "../deadline.ts";
import { decodeValues, encodeTensor, openFromWire, tokenIds, tokenToWire } from "./wire.ts";

/** The Forward method, for the lean gRPC path and the TCP data plane. */
export const FORWARD_METHOD = {
  path: `/${InferenceService.typeName}/${InferenceService.method.forward.name}`,
  input: ActivationFrameSchema,
  output: ForwardResponseSchema,
};

/** Forward's preamble on the TCP data plane (cluster/rpc/tcp_plane.ts). */
export const FORWARD_PREAMBLE = "DLF1";

/**
 * The largest opening frame over the data plane: its prompt ids (5 bytes each at most, bounded
 * by the context) and its hops fit many times over.
 */
export const MAX_OPENING_BYTES = 8 << 20;

/**
 * Forward on the TCP data plane: the same handler, one connection per session through this
 * stage: `maxStreams` bounds them (the agent allows twice its sessions; a stream over the limit
 * is refused and its link uses gRPC).
 */
export function forwardProtocol(
  ctx: ForwardContext,
  maxMessageBytes: number,
  maxStreams = 1024,
): PlaneProtocol {
  const handler = forwardHandler(ctx);
  // A head that stops reading its answers holds the session no longer than one that stops
  // sending frames.
  const writeTimeoutMs = Math.min(ctx.idleMs ?? DEFAULT_IDLE_MS, WRITE_TIMEOUT_MS);
  return {
    maxConnections: maxStreams,
    // The opening frame carries ids and hops, not activations: an unopened stream (anyone who
    // can reach the port) cannot make this agent hold a full-size message.
    serve: (conn) =>
      serveTcpBidi(
        conn,
        FORWARD_METHOD,
        handler,
        maxMessageBytes,
        writeTimeoutMs,
        MAX_OPENING_BYTES,
      ),
  };
}

/** What the Forward handler needs: the current stage (it may be replaced on re-placement). */
export interface ForwardContext {
  /** This agent's node id (named in failures it reports). */
  nodeId?: string;
  /** The stage this agent hosts now, or undefined when it hosts none. */
  host(): StageHost | undefined;
  /** This agent's placement epoch; sessions opened with another are refused (0n: unchecked). */
  epoch(): bigint;
  /** Links to the stages after this one (required for any stage but the tail). */
  linkTo?: LinkFactory;
  /** Rows per pipelined prompt chunk (default: chain_session.ts's PREFILL_CHUNK_ROWS). */
  chunkRows?: number;
  /** Reply streams heads opened to this agent (replies.ts): a tail sends tokens on them. */
  replies?: ReplySinks;
  /**
   * A stream with no frame for this long is ended and its session freed (default 5 min): a head
   * that vanished without closing its connection (a host lost, a partition) must not hold a KV
   * cache here until TCP keepalive notices, hours later. A head sends a session's frames one
   * token apart, so a live session is never idle for long. On the TCP data plane
   * it also bounds how long an answer may wait for the head to read it (at most 60 s).
   */
  idleMs?: number;
  /** How long a stream may take to send its opening (default 10 s; at most idleMs). */
  openingMs?: number;
  /** Called after each frame with its compute time and bytes in/out (metrics). */
  onFrame?(info: { computeMs: number; bytesIn: number; bytesOut: number }): void;
  /**
   * Aborted when gossip declares `nodeId` gone: a stream whose opening names it as the sender
   * (OpenSession.sender) ends then and frees its session. A stage that lost power leaves its
   * streams here open without a FIN, and each held a KV cache for the idle bound (5 minutes)
   * while the head's replays opened more: a stage more than half full then had no room.
   */
  lost?(nodeId: string): AbortSignal | undefined;
  /**
   * True while this agent shuts down and `sessionId` is not one of the requests it heads itself:
   * sessions open already run to their end (the drain waits for them), new ones are refused as
   * UNAVAILABLE, so their heads re-place them elsewhere instead of starting what the end of the
   * drain would cut off. The drain waits for its own requests too, so their sessions (a retry, a
   * replay, a chain that reaches this stage through another agent's) are let in.
   */
  draining?(sessionId: string): boolean;
}

/**
 * Refuse `positions` unless they are exactly the session's next `n` (from `first`): they were
 * ignored, so a head rolling back by positions got its rows appended instead, and a KV cache
 * that no longer matched its tokens. Truncating is not implemented.
 */
function checkPositions(positions: readonly number[], first: number, n: number): void {
  if (positions.length === n && positions.every((p, i) => p === first + i)) return;
  const got = positions.length > 4
    ? `${positions.slice(0, 4).join(", ")}, … (${positions.length})`
    : positions.join(", ");
  throw new RpcFailure(
    "invalid_argument",
    `positions must be the session's next ${n} (${first}..${first + n - 1}) or empty; got ` +
      `[${got}] (a stage does not truncate its KV cache)`,
  );
}

/** How long a Forward stream may take to send its first frame (its opening). */
const FIRST_FRAME_MS = 10_000;

/** How long a Forward stream may go without a frame (ForwardContext.idleMs). */
const DEFAULT_IDLE_MS = 300_000;

/**
 * Frames of one stream a stage runs before it waits for their answers: prompt chunks arrive
 * (partial frames, chain_session.ts) faster than the chain answers them, and must overlap.
 */
const MAX_FRAMES_IN_FLIGHT = 32;

/**
 * The Forward handler: frames in, one response per frame out (in order), KV cache freed when
 * the stream ends. A prompt chunk (a partial frame) does not wait for its answer before the next
 * frame is read, so a stage runs a prompt's next chunk while the previous one is further down
 * the chain; nor does any frame of a session whose tail replies to its head directly.
 * Every other frame is answered before the next is read.
 */
export function forwardHandler(ctx: ForwardContext) {
  const self = ctx.nodeId ?? "";
  /** Rows per chunk this stage sends a whole frame down in (chain_session.ts). */
  const chunkRows = chunkRowsOf(ctx.chunkRows);
  return async function* forward(
    frames: AsyncIterable<ActivationFrame>,
  ): AsyncIterable<ForwardResponse> {
    /** The stream's session, once its first frame opened it. */
    const s: {
      sessionId?: string;
      host?: StageHost;
      session?: SessionLink;
      /** The opening's response_dtype: hidden rows are answered in it (unset: as they came). */
      responseDtype?: Dtype;
      /** Position of the session's next row (undefined until its first frame with rows). */
      nextPosition?: number;
      /** The tail sends the session's tokens straight to its head (OpenSession.reply_direct). */
      replyDirect?: boolean;
      /** Why the stream's session was closed early (set by closeEarly), if it was. */
      ended?: string;
    } = {};
    /** Rejects when the opening's sender is declared gone (ForwardContext.lost). */
    let senderGone: Promise<never> = new Promise(() => {});
    let stopWatching = () => {};
    const watchSender = (sender: string) => {
      const signal = ctx.lost?.(sender);
      if (!signal) return;
      senderGone = new Promise<never>((_, reject) => {
        const gone = () =>
          reject(
            new RpcFailure("unavailable", openerGoneMessage(sender)),
          );
        if (signal.aborted) return gone();
        signal.addEventListener("abort", gone, { once: true });
        stopWatching = () => signal.removeEventListener("abort", gone);
      });
      senderGone.catch(() => {}); // raced below; never left to reject unhandled
    };
    /** One frame's answer: this stage's part and the chain's after it. */
    const handle = async (frame: ActivationFrame): Promise<ForwardResponse> => {
      let { host, session, sessionId } = s;
      const response = create(ForwardResponseSchema, {
        sessionId: frame.sessionId,
        step: frame.step,
      });
      try {
        if (frame.open) {
          // One session per stream: a second opening would orphan the first (its KV cache
          // never freed, since only the stream's session is closed when the stream ends).
          if (s.sessionId !== undefined) {
            throw new RpcFailure(
              "failed_precondition",
              `this stream already carries session ${s.sessionId}; open another stream`,
            );
          }
          host = s.host = ctx.host();
          if (!host) throw new RpcFailure("unavailable", "this agent hosts no layers right now");
          if (ctx.draining?.(frame.sessionId)) {
            throw new RpcFailure(
              "unavailable",
              `${
                self || "this agent"
              } is shutting down: it finishes the sessions open on it and takes no new one`,
            );
          }
          if (frame.open.model && frame.open.model !== host.model) {
            throw new RpcFailure(
              "failed_precondition",
              `this agent serves model ${host.model}, not ${frame.open.model}`,
            );
          }
          // Run as asked by a stale view, it would sample before the tail or leave layers out.
          const stale = staleRange(self, host.range, { from: frame.fromLayer, to: frame.toLayer });
          if (stale) throw stale;
          const answerIn = frame.open.responseDtype;
          if (Dtype[answerIn] === undefined) {
            throw new RpcFailure(
              "invalid_argument",
              `open.response_dtype ${answerIn} is not a Dtype (DTYPE_F32, DTYPE_F16 or unset)`,
            );
          }
          s.responseDtype = answerIn;
          const open = openFromWire(frame.sessionId, frame.open);
          s.replyDirect = open.replyDirect === true;
          if (frame.open.sender) watchSender(frame.open.sender);
          // The prompt's ids for the prefix cache: never more than the session can hold (they
          // are kept until its first frame, and passed on to every stage after this one).
          // (The session's own bound: an opening's max_context is clamped to the model's.)
          const room = Math.min(
            open.maxContext > 0 ? open.maxContext : Infinity,
            host.stage.config.contextLength,
          );
          if ((open.prefixIds?.length ?? 0) > room) {
            throw new RpcFailure(
              "invalid_argument",
              `prefix_tokens holds ${open.prefixIds!.length} ids; the session holds ${room}`,
            );
          }
          if (open.downstream.length > 0 && !ctx.linkTo) {
            throw new RpcFailure("unimplemented", "this stage cannot forward to another stage");
          }
          session = s.session = await openChainSession(host, open, {
            nodeId: self,
            epoch: ctx.epoch,
            linkTo: ctx.linkTo ?? (() => {
              throw new Error("unreachable: no downstream");
            }),
            chunkRows: ctx.chunkRows,
            replies: ctx.replies,
          });
          if (s.ended !== undefined) {
            // The stream broke (or its sender went) while the session was opening: closeEarly
            // found no session to close then, and nothing would later. Every such stream left
            // a KV slot held for good, here and at the next stages, until none was left.
            s.session = undefined;
            await session.close(s.ended);
            throw new RpcFailure("canceled", `the session closed while opening: ${s.ended}`);
          }
          sessionId = s.sessionId = frame.sessionId;
          response.cachedTokens = session.cachedTokens ?? 0;
        }
        if (!host || !session || sessionId === undefined) {
          throw new RpcFailure(
            "failed_precondition",
            "the first frame of a stream must open a session",
          );
        }
        if (frame.sessionId !== sessionId) {
          throw new RpcFailure(
            "invalid_argument",
            `frame for session ${frame.sessionId} on the stream of ${sessionId}`,
          );
        }
        response.nextLayer = host.range.to;
        const nRows = frame.tokens.length;
        if (nRows === 0 && (frame.data.byteLength > 0 || frame.shape.length > 0)) {
          // Its rows were dropped without a word: a stage runs rows by their tokens.
          throw new RpcFailure(
            "invalid_argument",
            "frame has data but no tokens: every row needs its token id",
          );
        }
        if (nRows === 0 && frame.positions.length > 0) {
          throw new RpcFailure("invalid_argument", "frame has positions but no tokens");
        }
        if (nRows > 0) {
          // Checked and counted before the first await: chunks are handled in the order they came.
          const first = s.nextPosition ?? frame.cachedPrefix;
          if (frame.positions.length > 0) checkPositions(frame.positions, first, nRows);
          s.nextPosition = first + nRows;
          const tokens = tokenIds(frame.tokens, "tokens");
          const hidden = frame.data.byteLength > 0
            ? decodeValues(frame.data, frame.shape, frame.dtype)
            : undefined;
          if (hidden && frame.shape[0] !== nRows) {
            throw new RpcFailure(
              "invalid_argument",
              `frame has ${nRows} tokens but ${frame.shape[0]} rows`,
            );
          }
          const out = await session.step({
            tokens,
            hidden,
            partial: frame.partial,
            ...(frame.cachedPrefix ? { cachedPrefix: frame.cachedPrefix } : {}),
          });
          response.computeMs = out.computeMs;
          // An opening's response_dtype was never read: rows went back as the frames came.
          const dtype = s.responseDtype || frame.dtype || Dtype.F32;
          if (out.kind === "replied") {
            response.replied = true;
          } else if (out.kind === "hidden") {
            const cols = out.hidden.length / nRows;
            response.result = {
              case: "hidden",
              value: encodeTensor(out.hidden, [nRows, cols], dtype),
            };
          } else if (out.kind === "logits") {
            response.result = {
              case: "logits",
              value: encodeTensor(out.logits, [1, out.logits.length], Dtype.F32),
            };
          } else if (out.kind === "token") {
            response.result = { case: "token", value: tokenToWire(out.token) };
          }
          ctx.onFrame?.({
            computeMs: out.computeMs,
            bytesIn: frame.data.byteLength,
            bytesOut: response.result.case === "hidden" || response.result.case === "logits"
              ? response.result.value.data.byteLength
              : 0,
          });
        }
      } catch (e) {
        // A stage further down failed (or planned with another epoch): say which, so the
        // head re-places the right one, and end this session.
        if (e instanceof StageLinkError || e instanceof StaleEpochError) {
          response.failure = create(StageFailureSchema, {
            nodeId: e.nodeId,
            message: e.message,
            staleEpoch: e instanceof StaleEpochError,
          });
          return response;
        }
        throw e;
      }
      if (frame.close) {
        // Closed already when the close came while answers were awaited (closeEarly).
        await s.session?.close(frame.close.reason);
        s.session = undefined;
        response.closed = true;
      }
      return response;
    };
    /**
     * Set once the session was cancelled while answers were still awaited (closeEarly): a close
     * without rows came, the stream broke, or its sender is gone. Every frame from then on is
     * answered `closed` without being run.
     */
    let closing = false;
    /** Close the session now: its passes queued here fail at once, and the stages after it close. */
    const closeEarly = async (reason: string) => {
      closing = true;
      s.ended ??= reason;
      const session = s.session;
      s.session = undefined;
      if (session) await session.close(reason);
      else if (s.host && s.sessionId !== undefined) s.host.close(s.sessionId);
    };
    /** The answer of a frame of a session closed before it ran. */
    const closedAnswer = (f: { sessionId: string; step: bigint }) =>
      create(ForwardResponseSchema, { sessionId: f.sessionId, step: f.step, closed: true });
    /** A close that carries no rows: a cancel (one with rows runs them first). */
    const isCancel = (f: ActivationFrame) =>
      f.close !== undefined && f.tokens.length === 0 && f.data.byteLength === 0;
    /** Frames still running (prompt chunks, then the frame being answered), oldest first. */
    const pending: { sessionId: string; step: bigint; answer: Promise<ForwardResponse> }[] = [];
    /**
     * A frame's answer, while the next frame is watched: a cancel (a close without rows), a
     * broken stream or a sender gone closes the session at once instead of after every answer in
     * flight, and the frames still running are answered `closed`. Before, a cancelled prompt ran
     * its every chunk on this stage and every stage after it, and held their KV caches meanwhile.
     * A half-close is no cancel: the frames sent before it are answered as usual.
     */
    const watched = async (
      f: { sessionId: string; step: bigint; answer: Promise<ForwardResponse> },
    ): Promise<ForwardResponse> => {
      if (!closing) {
        const next = await Promise.race([
          f.answer.then(() => undefined, () => undefined),
          incoming.then((n) => n, () => "broken" as const),
          senderGone.catch(() => "gone" as const),
        ]);
        if (next === "broken" || next === "gone") {
          // Not a cancel the asker sent: the stream ends with the failure (UNAVAILABLE for a
          // sender gone), as before the answers it was owed, so a head that is in fact alive
          // replays elsewhere instead of taking a `closed` answer for a result.
          await closeEarly(next === "gone" ? "its sender is gone" : "the stream broke");
          await (next === "gone" ? senderGone : incoming);
        } else if (next && !next.done && isCancel(next.value)) {
          await closeEarly(next.value.close!.reason);
        } else if (next) {
          // The next frame came and is no cancel (it waits its turn): the sender is still
          // watched while this answer runs.
          const gone = await Promise.race([
            f.answer.then(() => false, () => false),
            senderGone.catch(() => true),
          ]);
          if (gone) {
            await closeEarly("its sender is gone");
            await senderGone;
          }
        }
      }
      if (!closing) return await f.answer;
      await f.answer.catch(() => {});
      return closedAnswer(f);
    };
    /** Send the chunks' answers upstream, in order; true when one ended the session. */
    async function* flush(): AsyncGenerator<ForwardResponse, boolean> {
      while (pending.length) {
        const response = await watched(pending.shift()!);
        yield response;
        if (response.failure) return true;
      }
      return false;
    }
    let nextStep = 0n;
    const it = frames[Symbol.asyncIterator]();
    /** The next frame, asked for early so that answers can go out while it comes. */
    const ask = () => {
      const n = it.next();
      n.catch(() => {}); // read below; never left to reject unhandled
      return n;
    };
    let incoming = ask();
    const idleMs = ctx.idleMs ?? DEFAULT_IDLE_MS;
    /**
     * The next frame, or a failure when none comes within idleMs; the first frame (the opening)
     * within FIRST_FRAME_MS: a stream that sends nothing held its connection for the whole idle
     * limit (5 minutes), and a thousand of them the RPC port.
     */
    const withinIdle = <T>(next: Promise<T>): Promise<T> => {
      const opening = s.sessionId === undefined && !s.host;
      const ms = opening ? Math.min(idleMs, ctx.openingMs ?? FIRST_FRAME_MS) : idleMs;
      return orTimeout(Promise.race([next, senderGone]), ms, () =>
        new RpcFailure(
          "deadline_exceeded",
          opening
            ? `no opening within ${ms / 1000} s of the stream's start`
            : `no frame for ${ms / 1000} s: the session is closed (is its head gone?)`,
        ));
    };
    try {
      for (;;) {
        // With chunks in flight, whichever comes first: their oldest answer goes upstream as
        // soon as it is there, or the next frame is taken. (Waiting for the next frame alone
        // would hold the answers back: the stage above sends no more until they arrive.)
        if (pending.length && !closing) {
          const first = await Promise.race([
            incoming.then(() => false, () => false),
            pending[0].answer.then(() => true, () => true),
            // A sender gone stops the chunks in flight too (they would run down the chain).
            senderGone.catch(async (e) => {
              await closeEarly("its sender is gone");
              throw e;
            }),
          ]);
          if (first) {
            const response = await pending.shift()!.answer;
            yield response;
            // A failure further down ends this session.
            if (response.failure) return;
            continue;
          }
        }
        const n = await withinIdle(incoming);
        if (n.done) break;
        const frame = n.value;
        if (frame.step !== nextStep) {
          throw new RpcFailure(
            "failed_precondition",
            `session ${frame.sessionId}: expected step ${nextStep}, got ${frame.step} (the KV cache would be wrong)`,
          );
        }
        nextStep++;
        // Frames that need not be answered before the next is read: prompt chunks, and, in a
        // session whose tail sends tokens straight to the head, every frame but an opening or a
        // close. There the answer along the chain is only the tail's `replied`, relayed back
        // stage by stage, while the head already has the token and may have sent the next
        // frame: waiting for the relay held that frame's pass here for its crossings. Not a
        // frame this stage sends down in chunks (chain_session.ts): it queues its chunks one at
        // a time, and a frame run beside it would put its rows between them in the KV cache.
        const direct = s.replyDirect === true && frame.tokens.length <= chunkRows;
        const pipelined = (frame.partial || direct) && !frame.open && !frame.close;
        // The next frame is read while this one's answer is awaited (see watched).
        incoming = ask();
        // A cancel behind frames still running: they stop now rather than run to their end.
        if (isCancel(frame) && pending.length && !closing) await closeEarly(frame.close!.reason);
        if (closing) {
          // Frames of a closed session (a cancel, or ones sent after it) are not run.
          if (yield* flush()) return;
          yield closedAnswer(frame);
          if (frame.close) return;
          continue;
        }
        // A close waits for the frames before it; any other frame starts now, so its pass
        // queues behind theirs and its rows go down the chain right after them.
        const answer = frame.close ? undefined : handle(frame);
        // Read below, in order; never left to reject unhandled if the stream ends first.
        answer?.catch(() => {});
        if (pipelined && answer) {
          pending.push({ sessionId: frame.sessionId, step: frame.step, answer });
          if (pending.length < MAX_FRAMES_IN_FLIGHT) continue;
        }
        if (yield* flush()) return;
        if (!pipelined) {
          const response = closing
            ? closedAnswer(frame)
            : frame.close
            ? await handle(frame)
            : await watched({ sessionId: frame.sessionId, step: frame.step, answer: answer! });
          yield response;
          // A frame answered `closed` because a cancel came behind it: the cancel is answered
          // next, in its turn.
          if (response.failure || (response.closed && frame.close)) return;
        }
      }
      if (yield* flush()) return;
    } finally {
      stopWatching();
      // As a for-await would: the frames' source learns this side is done reading.
      it.return?.()?.catch(() => {});
      // The stream ended (closed, broken or cancelled): never leak a KV cache here or further.
      await closeEarly("stream ended");
    }
  };
}
