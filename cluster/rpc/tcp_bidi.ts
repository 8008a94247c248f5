/**
 * Bidirectional streams on the TCP data plane (tcp_plane.ts), both ends: the same calls as
 * grpc_stream.ts's {@linkcode openBidi} / {@linkcode serveBidi}, one connection per call.
 *
 * After the preamble each side sends envelopes; the client half-closes by shutting down its
 * writing side, the server ends with a trailer. A connection that closes without a trailer is a
 * lost peer (Unavailable, marked as the plane's: {@linkcode isPlaneUnavailable}).
 *
 * @module
 */
import { fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import type { DescMessage } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { toConnectError } from "./errors.ts";
import type { BidiCall, BidiImpl, BidiMethod } from "./grpc_stream.ts";
import {
  grpcEnvelope,
  MAX_QUEUED_BYTES,
  MAX_QUEUED_MESSAGES,
  MessageQueue,
} from "./grpc_envelope.ts";
import {
  closeQuietly,
  connectTcpPlane,
  FrameReader,
  isBrokenConnection,
  lingerClose,
  parseTrailer,
  planeUnavailable,
  TRAILER_FLAG,
  trailerEnvelope,
  WRITE_TIMEOUT_MS,
  writeAll,
} from "./tcp_plane.ts";

/**
 * Open a bidirectional call to the plane at `endpoint` under `magic`. Unreachable, or a
 * connection lost without a trailer: Unavailable (marked); a status the server sent keeps its
 * code and message.
 */
export async function openTcpBidi<I extends DescMessage, O extends DescMessage>(
  endpoint: string,
  magic: string,
  method: Omit<BidiMethod<I, O>, "path">,
  maxBytes: number,
): Promise<BidiCall<I, O>> {
  const conn = await connectTcpPlane(endpoint, magic);
  const queue = new MessageQueue<MessageShape<O>>();
  let done = false;
  // Sends are queued in order; a failed write is reported by the reading side (the peer gone).
  let writing: Promise<void> = Promise.resolve();
  const write = (op: () => Promise<void>) => {
    writing = writing.then(op).catch(() => {});
  };
  (async () => {
    const reader = new FrameReader(conn, maxBytes);
    try {
      for (;;) {
        const m = await reader.next();
        if (!m) throw new Error("closed without a status (peer gone?)");
        if (m.flags & TRAILER_FLAG) {
          const status = parseTrailer(m.body, endpoint);
          if (status) queue.fail(status);
          else queue.end();
          return;
        }
        queue.push(fromBinary(method.output, m.body));
      }
    } catch (e) {
      queue.fail(
        e instanceof ConnectError && e.code !== Code.DataLoss ? e : planeUnavailable(endpoint, e),
      );
    } finally {
      done = true;
      closeQuietly(conn);
    }
  })();
  return {
    send(message) {
      if (done) return;
      const bytes = grpcEnvelope(toBinary(method.input, message));
      write(() => writeAll(conn, bytes));
    },
    async receive() {
      const r = await queue.next();
      return r.done ? undefined : r.value;
    },
    end() {
      if (!done) write(() => conn.closeWrite());
    },
    abort() {
      queue.fail(new ConnectError("the call was cancelled", Code.Canceled));
      done = true;
      closeQuietly(conn);
    },
  };
}

/**
 * Serve one bidirectional call on a plane connection whose preamble was read. The client's
 * half-close (or going away) ends the request stream; an error the handler throws becomes the
 * trailer's status (mapped as the error interceptor maps errors); a client gone mid-answer
 * returns the handler's iterator so its `finally` runs.
 */
export async function serveTcpBidi<I extends DescMessage, O extends DescMessage>(
  conn: Deno.Conn,
  method: Omit<BidiMethod<I, O>, "path">,
  impl: BidiImpl<I, O>,
  maxBytes: number,
  /** Most ms an answer may wait for the client to read (then it counts as gone). */
  writeTimeoutMs = WRITE_TIMEOUT_MS,
  /**
   * The largest message until the handler's first answer (default `maxBytes`): a call opens
   * small, so a connection that has not been answered cannot hold a message of the full size.
   */
  firstMaxBytes = maxBytes,
): Promise<void> {
  const requests = new MessageQueue<MessageShape<I>>();
  const reader = new FrameReader(conn, Math.min(firstMaxBytes, maxBytes));
  const reading = (async () => {
    try {
      for (;;) {
        const m = await reader.next();
        if (!m) return requests.end();
        if (m.flags !== 0) {
          throw new ConnectError(`unexpected envelope flags ${m.flags}`, Code.InvalidArgument);
        }
        let message: MessageShape<I>;
        try {
          message = fromBinary(method.input, m.body);
        } catch (e) {
          throw new ConnectError(`bad message: ${(e as Error).message}`, Code.InvalidArgument);
        }
        requests.push(message, m.body.byteLength);
        // A client sending faster than the handler reads waits on TCP, not on this memory.
        await requests.room(MAX_QUEUED_MESSAGES, MAX_QUEUED_BYTES);
      }
    } catch (e) {
      requests.fail(
        isBrokenConnection(e)
          ? new ConnectError("the client went away", Code.Canceled)
          : toConnectError(e),
      );
    }
  })();
  const responses = impl(requests)[Symbol.asyncIterator]();
  let status: ConnectError | undefined;
  try {
    for (;;) {
      const r = await responses.next();
      if (r.done) break;
      // Encoded outside the write's try: a message that cannot be encoded is the handler's error
      // (its status goes in the trailer), not a client gone.
      const envelope = grpcEnvelope(toBinary(method.output, r.value));
      // The handler answered (a Forward stream: its opening): from now on frames may be of the
      // full size. Raised before the answer goes out, since a client sends only after it.
      reader.maxBytes = maxBytes;
      try {
        await writeAll(conn, envelope, writeTimeoutMs);
      } catch {
        // The client is gone, or stopped reading (any write error: it cannot be answered
        // again): end the handler (its finally frees the session), release the reader, stop.
        requests.end();
        await responses.return?.();
        return;
      }
    }
  } catch (e) {
    status = toConnectError(e);
  }
  await writeAll(conn, trailerEnvelope(status)).catch(() => {});
  // The client may still be sending (frames it had in flight): let the trailer arrive first.
  await lingerClose(conn);
  // A handler that stopped reading left the reader waiting for room in the queue: release it
  // (it then finds the connection closed), or this call, and its connection slot, never end.
  requests.end();
  await reading;
}
