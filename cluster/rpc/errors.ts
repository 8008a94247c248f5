/**
 * Errors across the RPC boundary: internal errors become `ConnectError`s with a precise code
 * and a message a user can act on; client-side failures are explained in terms of the endpoint
 * and the flags that choose it.
 *
 * @module
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

/**
 * An error that knows its RPC status. Modules that must not import Connect (or just prefer
 * not to) can instead put an `rpcCode` property on their own error classes, e.g.
 * `rpcCode = "resource_exhausted"`; {@linkcode toConnectError} honours both.
 *
 * @example
 * ```ts
 * throw new RpcFailure("resource_exhausted", "cluster budget 2 GiB < model 3.4 GiB; add nodes");
 * ```
 */
export class RpcFailure extends Error {
  /** The status code, as Connect's snake_case name. */
  readonly rpcCode: RpcCodeName;
  /** Make the error with its status `code` and a `message` saying what to do. */
  constructor(code: RpcCodeName, message: string) {
    super(message);
    this.name = "RpcFailure";
    this.rpcCode = code;
  }
}

/** Connect's status code names (the wire names of the Connect protocol). */
export type RpcCodeName =
  | "canceled"
  | "unknown"
  | "invalid_argument"
  | "deadline_exceeded"
  | "not_found"
  | "already_exists"
  | "permission_denied"
  | "resource_exhausted"
  | "failed_precondition"
  | "aborted"
  | "out_of_range"
  | "unimplemented"
  | "internal"
  | "unavailable"
  | "data_loss"
  | "unauthenticated";

const CODE_BY_NAME: Record<RpcCodeName, Code> = {
  canceled: Code.Canceled,
  unknown: Code.Unknown,
  invalid_argument: Code.InvalidArgument,
  deadline_exceeded: Code.DeadlineExceeded,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  permission_denied: Code.PermissionDenied,
  resource_exhausted: Code.ResourceExhausted,
  failed_precondition: Code.FailedPrecondition,
  aborted: Code.Aborted,
  out_of_range: Code.OutOfRange,
  unimplemented: Code.Unimplemented,
  internal: Code.Internal,
  unavailable: Code.Unavailable,
  data_loss: Code.DataLoss,
  unauthenticated: Code.Unauthenticated,
};

/** The name of a status code, as `rpcCode` properties spell it (CODE_BY_NAME read backwards). */
export function rpcCodeName(code: Code): RpcCodeName | undefined {
  for (const [name, c] of Object.entries(CODE_BY_NAME)) if (c === code) return name as RpcCodeName;
  return undefined;
}

/** Error names (the `name` property) of the project's validation errors: bad input, not bugs. */
const INVALID_ARGUMENT_NAMES = new Set([
  "SamplerParamError",
  "MetadataError",
  "InvalidArgumentError",
]);

/** Longest error message users see, in UTF-8 bytes (a 1 MB metadata key must not make a 2 MB line). */
export const MAX_MESSAGE_BYTES = 1024;

/**
 * `text` cut to at most `max` UTF-8 bytes, saying how much was left out.
 *
 * @example
 * ```ts
 * boundMessage("x".repeat(5000)).length; // ≤ 1024
 * ```
 */
export function boundMessage(text: string, max = MAX_MESSAGE_BYTES): string {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= max) return text;
  const note = ` … (${bytes.length} bytes, cut)`;
  // Cut at a character boundary: decoding a prefix may end in a replacement character.
  let head = new TextDecoder().decode(bytes.subarray(0, max - note.length - 4));
  head = head.replace(/\uFFFD$/, "");
  return head + note;
}

/**
 * Map any thrown value to a `ConnectError`. Order: a ConnectError stays as is; an `rpcCode`
 * property wins; then known error kinds (file not found → NOT_FOUND, network failures →
 * UNAVAILABLE, aborts → CANCELED, validation errors → INVALID_ARGUMENT); anything else is an
 * INTERNAL error whose message says it is a bug and how to get the stack.
 */
export function toConnectError(e: unknown): ConnectError {
  const ce = mapToConnectError(e);
  // Messages quote names and values from files and requests: never send megabytes back.
  const bounded = boundMessage(ce.rawMessage);
  return bounded === ce.rawMessage
    ? ce
    : new ConnectError(bounded, ce.code, ce.metadata, undefined, ce.cause);
}

function mapToConnectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  const err = e instanceof Error ? e : new Error(String(e));
  const code = (err as { rpcCode?: unknown }).rpcCode;
  if (typeof code === "string" && code in CODE_BY_NAME) {
    return new ConnectError(
      err.message,
      CODE_BY_NAME[code as RpcCodeName],
      undefined,
      undefined,
      err,
    );
  }
  if (typeof code === "number" && Code[code] !== undefined) {
    return new ConnectError(err.message, code as Code, undefined, undefined, err);
  }
  if (err instanceof Deno.errors.NotFound) {
    return new ConnectError(err.message, Code.NotFound, undefined, undefined, err);
  }
  if (
    err instanceof Deno.errors.ConnectionRefused || err instanceof Deno.errors.ConnectionReset ||
    err instanceof Deno.errors.ConnectionAborted || err instanceof Deno.errors.NotConnected
  ) {
    return new ConnectError(
      `${err.message} (a peer is unreachable; retry, or check that it is alive)`,
      Code.Unavailable,
      undefined,
      undefined,
      err,
    );
  }
  if (err.name === "AbortError") {
    return new ConnectError(err.message || "cancelled", Code.Canceled, undefined, undefined, err);
  }
  if (err instanceof Deno.errors.TimedOut || err.name === "TimeoutError") {
    return new ConnectError(err.message, Code.DeadlineExceeded, undefined, undefined, err);
  }
  if (INVALID_ARGUMENT_NAMES.has(err.name)) {
    return new ConnectError(err.message, Code.InvalidArgument, undefined, undefined, err);
  }
  return new ConnectError(
    `internal error: ${err.message} (a bug in the agent; rerun it with DLLM_DEBUG=1 for the ` +
      `stack and report it)`,
    Code.Internal,
    undefined,
    undefined,
    err,
  );
}

/**
 * Server interceptor that passes every error a handler throws, unary or mid-stream, through
 * {@linkcode toConnectError}, so handlers can throw plain errors and clients still see precise
 * codes. With `DLLM_DEBUG` set, INTERNAL errors are logged with their stack.
 */
export const errorInterceptor: Interceptor = (next): ReturnType<Interceptor> => async (req) => {
  const fail = (e: unknown): never => {
    const ce = toConnectError(e);
    if (ce.code === Code.Internal && Deno.env.get("DLLM_DEBUG")) {
      console.error(`${req.url}:`, ce.cause ?? ce);
    }
    throw ce;
  };
  try {
    const res = await next(req);
    if (!res.stream) return res;
    const inner = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          yield* inner;
        } catch (e) {
          fail(e);
        }
      })(),
    };
  } catch (e) {
    return fail(e);
  }
};

/**
 * Whether the agent itself sent this status: it came with response headers or trailers, while a
 * transport failure has neither and carries the socket error as its cause.
 */
export function answeredByAgent(e: unknown): boolean {
  const ce = ConnectError.from(e);
  return !ce.cause && [...ce.metadata.keys()].length > 0;
}

/**
 * Explain a failed client call in terms the caller can act on: which endpoint, and which flag
 * to change. Returns the original message for errors the server sent on purpose.
 *
 * @example
 * ```ts
 * try { await client.healthCheck({}); }
 * catch (e) { console.error(explainRpcError(e, "127.0.0.1:7950")); }
 * ```
 */
export function explainRpcError(
  e: unknown,
  endpoint: string,
  opts: { tls?: boolean } = {},
): string {
  const ce = ConnectError.from(e);
  const msg = ce.rawMessage;
  // The agent itself answered (its status came with response headers or trailers; transport
  // failures have neither and carry the socket error as cause): its reason is the news, even
  // when it is UNAVAILABLE ("no placement") or quotes a peer's certificate error.
  if (answeredByAgent(ce)) {
    return `the agent at ${endpoint} answered ${Code[ce.code]}: ${msg}`;
  }
  const lower = msg.toLowerCase();
  const tlsHint = `check --tls-ca/--tls-cert/--tls-key: both sides need certificates from the ` +
    `same CA (llmctl certs init)`;
  const wrongPort = `is that its RPC port (--rpc-port, 7950 by default; not the HTTP API's or ` +
    `the metrics port)?`;
  // The server hung up before any TLS was spoken: no certificate was ever looked at, so the
  // certificate hint would send the user the wrong way; a port of another protocol does this.
  if (/disconnected before secure tls connection/.test(lower)) {
    return `the server at ${endpoint} hung up before the TLS handshake (${msg}); ${wrongPort} ` +
      `Is the agent there started with --tls-cert/--tls-key/--tls-ca?`;
  }
  if (/certificate|tls|handshake|alert|unknownissuer|badsignature|ssl/.test(lower)) {
    return `TLS with the agent at ${endpoint} failed (${msg}); ${tlsHint}`;
  }
  // An HTTP/1.1 server (the OpenAI API's or the metrics port) answers HTTP/2's preface with a
  // 400, which the client reads as a protocol error.
  if (!opts.tls && /protocol error/.test(lower)) {
    return `the server at ${endpoint} does not speak gRPC over HTTP/2 (${msg}); ${wrongPort}`;
  }
  // With TLS 1.3 the server checks the client certificate after the client thinks the
  // handshake is done, so a rejected certificate shows up as a closed stream, not a TLS error.
  const closed = ce.code === Code.Canceled || /stream closed|socket hang up|epipe/.test(lower);
  if (opts.tls && closed) {
    return `the agent at ${endpoint} closed the connection (${msg}); it probably rejected this ` +
      `client's certificate: ${tlsHint}`;
  }
  // A TLS listener hangs up on a plaintext HTTP/2 preface the same way, and so may a server of
  // another protocol on a port taken for the RPC port: the connection goes at the first write.
  if (!opts.tls && /socket hang up|epipe/.test(lower)) {
    return `the agent at ${endpoint} closed the connection (${msg}); ${wrongPort} If it runs ` +
      `with mutual TLS, pass --tls-ca/--tls-cert/--tls-key`;
  }
  // A stream the agent ended (it shut down or restarted, often mid-stream): no wrong port.
  if (!opts.tls && closed) {
    return `the agent at ${endpoint} closed the connection (${msg}); it may be shutting down or ` +
      `restarting. If it runs with mutual TLS, pass --tls-ca/--tls-cert/--tls-key`;
  }
  if (
    ce.code === Code.Unavailable ||
    /econnrefused|connection refused|econnreset|enotfound|ehostunreach/.test(lower)
  ) {
    return `cannot reach the agent at ${endpoint} (${msg}); is it running? choose another with ` +
      `--endpoint host:port`;
  }
  if (ce.code === Code.DeadlineExceeded) {
    return `the agent at ${endpoint} did not answer in time (${msg}); it may be overloaded`;
  }
  return `${Code[ce.code]}: ${msg}`;
}

/**
 * gRPC's percent-encoding of `grpc-message`: only bytes outside printable ASCII, and "%"
 * itself. (encodeURIComponent also encodes spaces and punctuation, and clients such as grpc-js
 * show those escapes as they are.)
 *
 * @example
 * ```ts
 * grpcPercentEncode("no member «b»: 100%"); // "no member %C2%ABb%C2%BB: 100%25"
 * ```
 */
export function grpcPercentEncode(message: string): string {
  let out = "";
  for (const b of new TextEncoder().encode(message)) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25
      ? String.fromCharCode(b)
      : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}
