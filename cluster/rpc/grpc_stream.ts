/**
 * Bidirectional gRPC streams straight on `node:http2`, both ends, for the stage-to-stage hop.
 *
 * The wire is plain gRPC (a 5-byte envelope per protobuf message, `grpc-status` in trailers), so
 * any gRPC client or server still talks to it; only the code per message is shorter. Measured on
 * loopback with 3 KiB frames (one decode step's hidden row of the 110M model), Connect's stream
 * machinery took 0.1–0.25 ms between a handler's message and the socket write and 0.2–0.3 ms
 * between the socket read and the handler, against ~0.04 and ~0.02 ms here; a chain of three
 * stages sends six such messages per token. Unary calls, other protocols and compressed
 * requests keep going through Connect.
 *
 * Server streams whose implementation offers a raw version ({@linkcode RAW_SERVER_STREAMS}) take
 * this path too: the handler yields finished envelopes in buffers it reuses, and each write is
 * waited for (HTTP/2 flow control) before the next is asked for. FetchChunks serves 1 MiB chunks
 * this way without a per-chunk allocation.
 *
 * @module
 */
import * as http2 from "node:http2";
import { Buffer } from "node:buffer";
import { type DescMessage, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Http2SessionManager } from "@connectrpc/connect-node";
import { grpcPercentEncode, toConnectError } from "./errors.ts";
import {
  EnvelopeReader,
  grpcEnvelope,
  MAX_QUEUED_BYTES,
  MAX_QUEUED_MESSAGES,
  MessageQueue,
} from "./grpc_envelope.ts";

/** The content type both ends send (what Connect's gRPC transport sends too). */
export const GRPC_CONTENT_TYPE = "application/grpc+proto";

/** A bidirectional method as this path needs it: its path and message schemas. */
export interface BidiMethod<I extends DescMessage, O extends DescMessage> {
  /** `/package.Service/Method` */
  path: string;
  input: I;
  output: O;
}

/** A bidirectional call as its client drives it. */
export interface BidiCall<I extends DescMessage, O extends DescMessage> {
  /** Send one message (never blocks; HTTP/2 flow control queues it). */
  send(message: MessageShape<I>): void;
  /** The next message, or undefined once the server ended with OK; throws a ConnectError. */
  receive(): Promise<MessageShape<O> | undefined>;
  /** Half-close: no more messages from this side. */
  end(): void;
  /** Cancel the call (RST_STREAM CANCEL); reads waiting fail with CANCELED. */
  abort(): void;
}

function header(h: http2.IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The status a response's headers or trailers carry (undefined: none yet). */
function statusOf(h: http2.IncomingHttpHeaders): ConnectError | null | undefined {
  const s = header(h, "grpc-status");
  if (s === undefined) return undefined;
  const code = Number(s);
  if (code === 0) return null;
  let message = header(h, "grpc-message") ?? "";
  try {
    message = decodeURIComponent(message);
  } catch { /* not percent-encoded: as it is */ }
  const metadata = new Headers();
  for (const [k, v] of Object.entries(h)) {
    if (!k.startsWith(":") && v !== undefined) metadata.set(k, String(v));
  }
  return new ConnectError(message, Code[code] !== undefined ? code : Code.Unknown, metadata);
}

/** gRPC's mapping of an HTTP status without grpc-status to a code. */
function httpStatusCode(status: number): Code {
  return status === 400
    ? Code.Internal
    : status === 401
    ? Code.Unauthenticated
    : status === 403
    ? Code.PermissionDenied
    : status === 404
    ? Code.Unimplemented
    : status === 429 || status === 502 || status === 503 || status === 504
    ? Code.Unavailable
    : Code.Unknown;
}

/**
 * Open a bidirectional call on `sessions`' connection. Transport failures (refused, reset,
 * closed without a status) are UNAVAILABLE; a status the server sent keeps its code and message.
 */
export async function openBidi<I extends DescMessage, O extends DescMessage>(
  sessions: Http2SessionManager,
  method: BidiMethod<I, O>,
  maxBytes: number,
): Promise<BidiCall<I, O>> {
  let stream: http2.ClientHttp2Stream;
  try {
    stream = await sessions.request("POST", method.path, {
      "content-type": GRPC_CONTENT_TYPE,
      te: "trailers",
    }, {});
  } catch (e) {
    throw new ConnectError(`${(e as Error).message}`, Code.Unavailable, undefined, undefined, e);
  }
  const queue = new MessageQueue<MessageShape<O>>();
  const reader = new EnvelopeReader(maxBytes);
  /** The status that ends the call: null for OK, undefined while none came. */
  let status: ConnectError | null | undefined;
  const unavailable = (why: string, cause?: unknown) =>
    new ConnectError(why, Code.Unavailable, undefined, undefined, cause);
  stream.on("response", (h) => {
    const st = Number(h[":status"]);
    if (st !== 200) {
      status = new ConnectError(`HTTP ${st} from ${method.path}`, httpStatusCode(st));
      return;
    }
    // Trailers-only: the status came with the headers.
    const s = statusOf(h);
    if (s !== undefined) status = s;
  });
  stream.on("data", (chunk: Uint8Array) => {
    sessions.notifyResponseByteRead(stream);
    try {
      for (const body of reader.push(chunk)) queue.push(fromBinary(method.output, body));
    } catch (e) {
      queue.fail(toConnectError(e));
      stream.close(0x8); // CANCEL
    }
  });
  stream.on("trailers", (h) => {
    const s = statusOf(h);
    status = s === undefined ? new ConnectError("trailers without grpc-status", Code.Internal) : s;
  });
  stream.on("error", (e: Error) => {
    queue.fail(status ?? unavailable(`stream to ${method.path} failed: ${e.message}`, e));
  });
  // The server's side ends with its trailers ("end"), which can come before this side is done
  // sending; "close" covers resets and lost connections.
  const settle = () => {
    if (status === null) queue.end();
    else {
      queue.fail(
        status ?? unavailable(`stream to ${method.path} closed without a status (peer gone?)`),
      );
    }
  };
  stream.on("end", settle);
  stream.on("close", settle);
  return {
    send(message) {
      if (stream.writable) stream.write(grpcEnvelope(toBinary(method.input, message)));
    },
    async receive() {
      const r = await queue.next();
      return r.done ? undefined : r.value;
    },
    end() {
      if (stream.writable) stream.end();
    },
    abort() {
      status ??= new ConnectError("the call was cancelled", Code.Canceled);
      queue.fail(status);
      if (!stream.destroyed) stream.close(0x8); // CANCEL
    },
  };
}

/** Whether a request is one this path serves: gRPC over HTTP/2, uncompressed. */
export function isPlainGrpc(h: http2.IncomingHttpHeaders): boolean {
  const type = header(h, "content-type");
  const encoding = header(h, "grpc-encoding");
  return (type === "application/grpc" || type === GRPC_CONTENT_TYPE) &&
    (encoding === undefined || encoding === "identity");
}

/** Milliseconds per unit of a `grpc-timeout` header (gRPC over HTTP/2: H M S m u n). */
const TIMEOUT_UNITS: Record<string, number> = {
  H: 3_600_000,
  M: 60_000,
  S: 1000,
  m: 1,
  u: 1e-3,
  n: 1e-6,
};

/**
 * The deadline a request's `grpc-timeout` header sets, milliseconds from now; undefined without
 * one, for one that is malformed, and for one beyond what a timer holds (~24.8 days: further
 * than any call here lasts).
 */
export function grpcTimeoutMs(h: http2.IncomingHttpHeaders): number | undefined {
  const m = /^(\d{1,8})([HMSmun])$/.exec(header(h, "grpc-timeout") ?? "");
  if (!m) return undefined;
  const ms = Number(m[1]) * TIMEOUT_UNITS[m[2]];
  return ms <= 0x7fffffff ? Math.ceil(ms) : undefined;
}

/** The trailers of a call whose deadline passed. */
function deadlineTrailers(path: string, ms: number): Record<string, string> {
  return {
    "grpc-status": String(Code.DeadlineExceeded),
    "grpc-message": grpcPercentEncode(`${path}: the deadline (grpc-timeout, ${ms} ms) passed`),
  };
}

/**
 * Arm the call's deadline (its `grpc-timeout`): `expire` runs when it passes. Returns what
 * disarms it (the call ended first).
 */
function armDeadline(
  req: http2.Http2ServerRequest,
  expire: (ms: number) => void,
): () => void {
  const ms = grpcTimeoutMs(req.headers);
  if (ms === undefined) return () => {};
  const timer = setTimeout(() => expire(ms), ms);
  return () => clearTimeout(timer);
}

/** How long after ending a response its stream is reset (endNow). */
const RESET_AFTER_TRAILERS_MS = 10;

/**
 * End the response with `trailers`, then reset the stream (NO_ERROR) once they are out: the
 * client may still be sending, and gRPC stops it so rather than leave the stream half open.
 */
function endNow(res: http2.Http2ServerResponse, trailers: Record<string, string>): void {
  res.addTrailers(trailers);
  // The trailers go out after end's callback: a reset sent from it went first and lost them.
  res.end(() =>
    setTimeout(() => {
      if (!res.stream?.closed) res.stream?.close(0); // NGHTTP2_NO_ERROR
    }, RESET_AFTER_TRAILERS_MS)
  );
}

/** A bidirectional handler: messages in, messages out (Connect's signature, context unused). */
export type BidiImpl<I extends DescMessage, O extends DescMessage> = (
  requests: AsyncIterable<MessageShape<I>>,
) => AsyncIterable<MessageShape<O>>;

/**
 * The trailers that end a call whose handler threw `e` (mapped as the error interceptor maps
 * errors on Connect's path); an internal error's cause goes to stderr under DLLM_DEBUG.
 */
function errorTrailers(path: string, e: unknown): Record<string, string> {
  const ce = toConnectError(e);
  if (ce.code === Code.Internal && Deno.env.get("DLLM_DEBUG")) {
    console.error(`${path}:`, ce.cause ?? ce);
  }
  return { "grpc-status": String(ce.code), "grpc-message": grpcPercentEncode(ce.rawMessage) };
}

/**
 * Serve one bidirectional gRPC call on an HTTP/2 request/response pair. Errors the handler
 * throws go through {@linkcode toConnectError} (as the error interceptor does on Connect's
 * path); a client that cancels or disconnects ends the request stream, and the handler's
 * iterator is returned so its `finally` runs. A call whose `grpc-timeout` passes ends with
 * DEADLINE_EXCEEDED at once, its handler as for a client gone.
 */
export async function serveBidi<I extends DescMessage, O extends DescMessage>(
  req: http2.Http2ServerRequest,
  res: http2.Http2ServerResponse,
  method: BidiMethod<I, O>,
  impl: BidiImpl<I, O>,
  maxBytes: number,
): Promise<void> {
  const requests = new MessageQueue<MessageShape<I>>();
  const reader = new EnvelopeReader(maxBytes);
  let gone = false;
  req.on("data", (chunk: Uint8Array) => {
    try {
      for (const body of reader.push(chunk)) {
        requests.push(fromBinary(method.input, body), body.byteLength);
      }
      // A client sending faster than the handler reads waits on HTTP/2 flow control.
      if (requests.size >= MAX_QUEUED_MESSAGES || requests.bytes >= MAX_QUEUED_BYTES) {
        req.pause();
        requests.room(MAX_QUEUED_MESSAGES, MAX_QUEUED_BYTES).then(() => req.resume());
      }
    } catch (e) {
      requests.fail(
        e instanceof ConnectError
          ? e
          : new ConnectError((e as Error).message, Code.InvalidArgument),
      );
    }
  });
  req.on("end", () => {
    if (reader.pending > 0) requests.fail(new ConnectError("message cut short", Code.Internal));
    else requests.end();
  });
  const hangUp = () => {
    gone = true;
    requests.end();
  };
  req.on("aborted", hangUp);
  res.on("close", hangUp);
  res.writeHead(200, { "content-type": GRPC_CONTENT_TYPE });
  let trailers: Record<string, string> = { "grpc-status": "0" };
  const responses = impl(requests)[Symbol.asyncIterator]();
  // Before, an idle Forward with grpc-timeout 1S stayed open until its client gave up, and then
  // ended OK. The handler sees its requests end; its next answer is dropped and its iterator
  // returned, as for a client gone.
  const disarm = armDeadline(req, (ms) => {
    if (gone) return;
    hangUp();
    endNow(res, deadlineTrailers(method.path, ms));
  });
  res.on("close", disarm);
  try {
    for (;;) {
      const r = await responses.next();
      if (r.done) break;
      if (gone) {
        await responses.return?.();
        break;
      }
      // A client that stops reading: wait for its window (each answer may be a megabyte of
      // logits; buffered without bound they grew an agent by hundreds of MB), and give up on it
      // after WRITE_STALL_MS as the data plane does.
      if (!res.write(Buffer.from(grpcEnvelope(toBinary(method.output, r.value))))) {
        if (!(await drained(res, WRITE_STALL_MS))) {
          gone = true;
          requests.end();
          await responses.return?.();
          res.stream?.close(0x8); // NGHTTP2_CANCEL
          return;
        }
      }
    }
  } catch (e) {
    trailers = errorTrailers(method.path, e);
  }
  disarm();
  if (gone) return;
  res.addTrailers(trailers);
  res.end();
}

/** How long a bidi answer may wait for a client that reads nothing before the call ends. */
const WRITE_STALL_MS = 60_000;

/** Resolves true once `res` drains, false when it closes or `ms` pass first. */
function drained(res: http2.Http2ServerResponse, ms: number): Promise<boolean> {
  // Already gone: its close event has fired (or never will again).
  if (res.destroyed || res.writableEnded) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      res.off("drain", onDrain);
      res.off("close", onClose);
      resolve(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    const timer = setTimeout(() => done(false), ms);
    res.on("drain", onDrain);
    res.on("close", onClose);
  });
}

/**
 * Where a service implementation offers raw versions of its server-streaming methods, by local
 * name: `impl[RAW_SERVER_STREAMS] = { fetchChunks: (req, signal) => … }`. The lean path serves
 * plain gRPC calls with them; Connect keeps serving the method's ordinary version.
 */
export const RAW_SERVER_STREAMS: unique symbol = Symbol("raw server streams");

/**
 * A server-streaming handler yielding whole gRPC envelopes (uncompressed), each valid until the
 * next one is asked for: it may write them into buffers it reuses.
 */
export type RawServerStream<I extends DescMessage> = (
  request: MessageShape<I>,
  signal: AbortSignal,
) => AsyncIterable<Uint8Array>;

/**
 * Most time a server stream waits for its client to take a message (the peer's HTTP/2 window
 * to open): a client that stops reading is cut off then, as the TCP data plane cuts one. Eight
 * FetchChunks streams that were never read held a source's chunk permits for good, and no other
 * node could fetch from it.
 */
export const STREAM_WRITE_TIMEOUT_MS = 60_000;

/**
 * Write `bytes` and wait until HTTP/2 has taken them (the peer's window had room), at most
 * `timeoutMs`: then the stream is reset and this rejects.
 */
export function writeAndWait(
  res: http2.Http2ServerResponse,
  bytes: Uint8Array,
  timeoutMs = STREAM_WRITE_TIMEOUT_MS,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const timer = setTimeout(() => {
      reject(
        new ConnectError(
          `the client took nothing for ${timeoutMs / 1000} s: the stream is closed`,
          Code.DeadlineExceeded,
        ),
      );
      res.stream?.close(http2.constants.NGHTTP2_CANCEL);
    }, timeoutMs);
    res.write(view, (err?: Error | null) => {
      clearTimeout(timer);
      if (err) reject(err);
      else resolve();
    });
  });
}

/**
 * Serve one server-streaming gRPC call with a raw handler: read the single request message,
 * then write each envelope the handler yields, asking for the next only once the write is done.
 * A client that cancels or disconnects aborts `signal` and returns the handler's iterator; so
 * does a `grpc-timeout` passing, and the call ends with DEADLINE_EXCEEDED.
 */
export async function serveServerStream<I extends DescMessage>(
  req: http2.Http2ServerRequest,
  res: http2.Http2ServerResponse,
  method: { path: string; input: I },
  impl: RawServerStream<I>,
  maxBytes: number,
): Promise<void> {
  const gone = new AbortController();
  const hangUp = () => gone.abort();
  req.on("aborted", hangUp);
  res.on("close", hangUp);
  res.writeHead(200, { "content-type": GRPC_CONTENT_TYPE });
  let trailers: Record<string, string> = { "grpc-status": "0" };
  const disarm = armDeadline(req, (ms) => {
    if (gone.signal.aborted) return;
    hangUp();
    endNow(res, deadlineTrailers(method.path, ms));
  });
  res.on("close", disarm);
  try {
    const reader = new EnvelopeReader(maxBytes);
    const bodies: Uint8Array[] = [];
    // One request message, within a bound: a client that sends more, or never ends its half,
    // is answered rather than buffered (40 MiB of empty envelopes grew an agent by gigabytes).
    let timer: ReturnType<typeof setTimeout> | undefined;
    /** Answered already: what the client still sends is read and dropped, never kept. */
    let settled = false;
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(
        () => reject(new ConnectError("no complete request within 30 s", Code.DeadlineExceeded)),
        30_000,
      );
      req.on("data", (chunk: Uint8Array) => {
        if (settled) return;
        try {
          bodies.push(...reader.push(chunk));
          if (bodies.length > 1) {
            reject(
              new ConnectError(`${method.path} takes one request message`, Code.InvalidArgument),
            );
          }
        } catch (e) {
          reject(e);
        }
      });
      req.on("end", () => {
        if (reader.pending > 0) reject(new ConnectError("message cut short", Code.Internal));
        else resolve();
      });
      req.on("error", reject);
      gone.signal.addEventListener("abort", () => resolve());
    }).finally(() => {
      settled = true;
      clearTimeout(timer);
    });
    if (gone.signal.aborted) return;
    if (bodies.length !== 1) {
      throw new ConnectError(
        `${method.path} takes one request message, got ${bodies.length}`,
        Code.InvalidArgument,
      );
    }
    let request: MessageShape<I>;
    try {
      request = fromBinary(method.input, bodies[0]);
    } catch (e) {
      throw new ConnectError(`bad request: ${(e as Error).message}`, Code.InvalidArgument);
    }
    for await (const envelope of impl(request, gone.signal)) {
      if (gone.signal.aborted) break;
      await writeAndWait(res, envelope);
    }
  } catch (e) {
    if (gone.signal.aborted) return;
    trailers = errorTrailers(method.path, e);
  }
  disarm();
  if (gone.signal.aborted) return;
  res.addTrailers(trailers);
  res.end();
}
