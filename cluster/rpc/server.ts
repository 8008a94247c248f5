/**
 * The agent's RPC listener: one port serving gRPC, gRPC-web and Connect (gzip accepted) for
 * every service, on `node:http2`.
 *
 * - With TLS files: `createSecureServer` with `requestCert` + `rejectUnauthorized`, so every
 *   client must present a certificate signed by the cluster CA (mutual TLS); `allowHTTP1` lets
 *   gRPC-web and Connect clients on HTTP/1.1 in too.
 * - Without: plaintext, HTTP/2 with prior knowledge (h2c, what gRPC clients speak) and HTTP/1.1
 *   on the same port, told apart by the first bytes of each connection (the HTTP/2 preface
 *   starts with "PRI "). Plaintext binds to loopback only, unless `insecureBindAll` says the
 *   network is trusted.
 *
 * @module
 */
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { Buffer } from "node:buffer";
import type { DescMessage, DescService } from "@bufbuild/protobuf";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { compressionGzip, connectNodeAdapter } from "@connectrpc/connect-node";
import { loadTlsFiles, type TlsFiles } from "../tls/files.ts";
import { errorInterceptor, grpcPercentEncode } from "./errors.ts";
import { mendAuthority } from "./request_authority.ts";

import {
  type BidiImpl,
  type BidiMethod,
  isPlainGrpc,
  RAW_SERVER_STREAMS,
  type RawServerStream,
  serveBidi,
  serveServerStream,
} from "./grpc_stream.ts";
import { tracingEnabled } from "../telemetry/tracing.ts";
import {
  type ConnectionActivity,
  type ConnectionLimits,
  guardListener,
  type Warn,
} from "../net/mod.ts";
import { InferenceService, TransferService } from "../../proto/mod.ts";

/**
 * Streams one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS; further
 * ones are refused with REFUSED_STREAM). The runtime announced no limit: 60 000 streams opened
 * on one connection took 1.2 GB and stalled the agent until gossip declared it dead. A head's
 * sessions to one stage (one stream each, --max-sessions 64 by default) stay far below it.
 */
export const MAX_CONCURRENT_STREAMS = 1024;
export { grpcPercentEncode };

/** The RPC port users see (DESIGN.md "Names users see"). */
export const DEFAULT_RPC_PORT = 7950;
/** Loopback: the only address plaintext RPC binds to without `insecureBindAll`. */
export const DEFAULT_RPC_HOST = "127.0.0.1";
/**
 * Largest message accepted by the methods that carry activations, bytes: a prefill frame of
 * 4096 tokens × 8192 f32 is 128 MiB.
 */
export const DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024;
/**
 * Largest request message any other method accepts, bytes: four times what the HTTP API takes
 * in a body. At 256 MiB a 10 MB Generate prompt was taken whole (~1.3 GB of RSS, seconds of the
 * event loop) before anything could refuse it.
 */
export const DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024;
/**
 * The methods whose requests may be large, by path: they take `maxMessageBytes`. Forward carries
 * activations; Prepare carries a model's whole manifest (up to 64 MiB: a 1 TB model in 1 MiB
 * chunks), which a 16 MiB bound refused past ~480 GB.
 */
export const LARGE_MESSAGE_METHODS: readonly string[] = [
  `/${InferenceService.typeName}/${InferenceService.method.forward.name}`,
  `/${TransferService.typeName}/${TransferService.method.prepare.name}`,
];

/** Options of {@linkcode startRpcServer}. */
export interface RpcServerOptions {
  /** Address to bind; default 127.0.0.1. A non-loopback address needs `tls` or `insecureBindAll`. */
  host?: string;
  /** Port; default 7950; 0 picks a free one (see {@linkcode RpcServer.port}). */
  port?: number;
  /** Certificate, key and CA files: turns on mutual TLS. */
  tls?: TlsFiles;
  /** Allow a non-loopback bind without TLS (the agent's --insecure-bind-all). */
  insecureBindAll?: boolean;
  /** Registers the services, e.g. `(r) => r.service(NodeService, handlers)`. */
  routes: (router: ConnectRouter) => void;
  /** Extra interceptors, run inside the error mapper. */
  interceptors?: Interceptor[];
  /**
   * Largest message the methods of `largeMessageMethods` accept, bytes; default
   * {@linkcode DEFAULT_MAX_MESSAGE_BYTES}.
   */
  maxMessageBytes?: number;
  /** Largest request message of every other method, bytes; default {@linkcode DEFAULT_MAX_REQUEST_BYTES}. */
  maxRequestBytes?: number;
  /** Paths of the methods allowed `maxMessageBytes`; default {@linkcode LARGE_MESSAGE_METHODS}. */
  largeMessageMethods?: readonly string[];
  /** Connection bounds; default {@linkcode RPC_CONNECTION_LIMITS}. */
  limits?: Partial<ConnectionLimits>;
  /** How often the listener checks it still accepts (ms; 0: never); default 5 s. */
  probeEveryMs?: number;
  /** Where warnings go (accept failures); default a JSON line on stderr. */
  warn?: Warn;
  /**
   * How long a call's request may take to arrive whole (every method but the bidirectional
   * streams); default {@linkcode REQUEST_TIMEOUT_MS}.
   */
  requestTimeoutMs?: number;
}

/**
 * How long a unary or server-streaming call's request may take to arrive whole: a request that
 * never ended (HEADERS without END_STREAM, a lying length) held its connection for good, and
 * 1024 of them shut the RPC port to everyone. 60 s takes Prepare's largest manifest (64 MiB) at
 * 1.1 MB/s.
 */
export const REQUEST_TIMEOUT_MS = 60_000;

/** The methods whose request is a stream of the call's length (no request deadline). */
const BIDI_PATHS = new Set([
  "/distributed_llm.v1.InferenceService/Forward",
  "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
  "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
]);

/**
 * The RPC listener's bounds. Peers keep one HTTP/2 connection each (a stage's links, transfers,
 * llmctl), far below 1024, the HTTP API's cap too. A connection must start a call within 10 s
 * (a sniffed protocol, then HTTP/2 stream or HTTP/1.1 request headers); one with no call in
 * flight for 5 minutes is closed (with GOAWAY on HTTP/2, which clients read as "open a new
 * connection"). A call in flight, a stream of any length, is never cut.
 */
export const RPC_CONNECTION_LIMITS: ConnectionLimits = {
  maxConnections: 1024,
  silentMs: 10_000,
  idleMs: 300_000,
};

/** A running RPC listener. */
export interface RpcServer {
  /** Address bound. */
  readonly host: string;
  /** Port bound (the real one when 0 was asked for). */
  readonly port: number;
  /** Whether mutual TLS is on. */
  readonly tls: boolean;
  /** Base URL for clients, e.g. "https://127.0.0.1:7950". */
  readonly url: string;
  /** Stop accepting, let open calls finish for up to `graceMs` (default 1000), then cut them. */
  close(graceMs?: number): Promise<void>;
}

/** The listener was refused: unsafe bind, port in use, bad TLS files. The message says why. */
export class RpcServerError extends Error {
  /** Make the error; `message` says what is wrong and what to do. */
  constructor(message: string) {
    super(message);
    this.name = "RpcServerError";
  }
}

/** True for addresses only this machine can reach: 127.0.0.0/8, ::1 and "localhost". */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  if (h === "localhost" || h === "::1" || h === "0:0:0:0:0:0:0:1") return true;
  const v4 = h.startsWith("::ffff:") ? h.slice(7) : h;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

/**
 * Refuse to serve plaintext RPC beyond this machine unless explicitly allowed: anyone who can
 * reach the port could otherwise drive the agent (run prompts, make nodes leave). Throws
 * {@linkcode RpcServerError} naming both ways out.
 */
export function checkBindAddress(
  host: string,
  opts: { tls: boolean; insecureBindAll?: boolean },
): void {
  if (opts.tls || opts.insecureBindAll || isLoopback(host)) return;
  throw new RpcServerError(
    `refusing to serve RPC in plaintext on ${host}: every machine that can reach it could ` +
      `drive this agent. Either enable mutual TLS with --tls-cert/--tls-key/--tls-ca ` +
      `(create them with \`llmctl certs init\`), or pass --insecure-bind-all if this network ` +
      `is trusted, or bind to 127.0.0.1.`,
  );
}

type NodeHandler = ReturnType<typeof connectNodeAdapter>;
type Headers = Record<string, unknown> | undefined;

/** Re-encode the grpc-message that connect-node wrote with encodeURIComponent. */
function reencode(headers: Headers): void {
  const v = headers?.["grpc-message"];
  if (typeof v !== "string") return;
  let raw = v;
  try {
    raw = decodeURIComponent(v);
  } catch { /* not encoded by us: leave it */ }
  headers!["grpc-message"] = grpcPercentEncode(raw);
}

/** The encodings gRPC requests may be compressed with here (the adapter's acceptCompression). */
const GRPC_ACCEPT_ENCODING = "gzip";

/**
 * Name the encodings this server takes on a gRPC or gRPC-web response: the compression spec
 * requires it on the UNIMPLEMENTED that refuses a request's encoding, so a client can retry with
 * one of them, and Connect sent it on none.
 */
function acceptEncoding(headers: Headers): void {
  const type = headers?.["content-type"];
  if (typeof type !== "string" || !type.startsWith("application/grpc")) return;
  headers!["grpc-accept-encoding"] ??= GRPC_ACCEPT_ENCODING;
}

/**
 * The handler with every response's grpc-message (headers or trailers) encoded as gRPC says, and
 * its headers naming the encodings taken ({@linkcode acceptEncoding}).
 */
function withGrpcMessageEncoding(handler: NodeHandler): NodeHandler {
  return (req, res) => {
    const r = res as unknown as {
      writeHead: (status: number, headers?: Headers) => unknown;
      addTrailers: (headers: Headers) => void;
    };
    const writeHead = r.writeHead.bind(r);
    const addTrailers = r.addTrailers.bind(r);
    r.writeHead = (status, headers) => {
      reencode(headers);
      acceptEncoding(headers);
      return writeHead(status, headers);
    };
    r.addTrailers = (headers) => {
      reencode(headers);
      addTrailers(headers);
    };
    return handler(req, res);
  };
}

/**
 * Start the RPC listener; resolves once it is bound.
 *
 * @example
 * ```ts
 * const server = await startRpcServer({
 *   port: 0,
 *   routes: (r) => r.service(NodeService, nodeService(deps)),
 * });
 * console.log(server.url);
 * await server.close();
 * ```
 */
export async function startRpcServer(opts: RpcServerOptions): Promise<RpcServer> {
  const host = opts.host ?? DEFAULT_RPC_HOST;
  const port = opts.port ?? DEFAULT_RPC_PORT;
  checkBindAddress(host, { tls: opts.tls !== undefined, insecureBindAll: opts.insecureBindAll });
  const limits: MessageLimits = {
    large: new Set(opts.largeMessageMethods ?? LARGE_MESSAGE_METHODS),
    largeBytes: opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    bytes: opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES,
  };
  const lean = new Map<string, LeanMethod>();
  const services = new Set<string>();
  const connect = withGrpcMessageEncoding(connectNodeAdapter({
    routes: (router) => opts.routes(capturingLean(router, lean, limits, services)),
    fallback: (req, res) => unknownMethod(req, res, services),
    interceptors: [errorInterceptor, ...(opts.interceptors ?? [])],
    acceptCompression: [compressionGzip],
    // The small bound; the methods of limits.large are registered again with theirs.
    readMaxBytes: limits.bytes,
    // gzip only pays off on larger messages; small unary answers go out as they are.
    compressMinBytes: 1024,
  }));
  // Bidirectional gRPC calls, and server streams with a raw version, take the lean path
  // (grpc_stream.ts): Connect's stream machinery was most of a stage-to-stage hop, and allocated
  // two buffers per served model chunk. With tracing on they stay on Connect's path, where the
  // interceptors carry the trace context.
  // Calls in flight per connection (keyed by the peer's address, which the raw socket, its TLS
  // wrapper and HTTP/2's socket proxy all report): the guard closes only connections with none.
  const activity = new Map<string, ConnectionActivity>();
  /** host:port of this listener (set once bound), for requests whose own does not parse. */
  let ownAuthority = "localhost";
  const requestTimeoutMs = opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
  /** Calls in flight (close() waits for them within its grace). */
  let inFlight = 0;
  const handler: NodeHandler = (req, res) => {
    const a = activity.get(peerKey(req.socket));
    a?.busy();
    inFlight++;
    res.once("close", () => {
      a?.done();
      inFlight--;
    });
    if (!BIDI_PATHS.has(req.url ?? "")) {
      // A request that never arrives whole is cut off (its stream, or an HTTP/1.1 connection).
      const cut = setTimeout(() => {
        if (req.complete) return;
        // (Under Deno, destroying an HTTP/2 compat request leaves its stream open: reset it.)
        const stream = (res as { stream?: http2.ServerHttp2Stream }).stream;
        if (stream) stream.close(http2.constants.NGHTTP2_CANCEL);
        else req.socket.destroy();
      }, requestTimeoutMs);
      const clear = () => clearTimeout(cut);
      req.once("end", clear);
      res.once("close", clear);
    }
    const m = !tracingEnabled && req.httpVersionMajor === 2 && req.method === "POST"
      ? lean.get(req.url ?? "")
      : undefined;
    if (!m || !isPlainGrpc(req.headers)) {
      if (!mendAuthority(req, res, ownAuthority)) return;
      return connect(req, res);
    }
    const [r, s] = [req as unknown as Http2Req, res as unknown as Http2Res];
    const maxBytes = limits.large.has(req.url ?? "") ? limits.largeBytes : limits.bytes;
    const served = m.kind === "bidi"
      ? serveBidi(r, s, m.method, m.impl, maxBytes)
      : serveServerStream(r, s, m.method, m.impl, maxBytes);
    served.catch((e) => {
      // The response could not be written (the client is gone): nothing to tell anyone.
      if (Deno.env.get("DLLM_DEBUG")) console.error(`${req.url}:`, e);
    });
  };

  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
    // A client resetting its connection must not crash the agent; the HTTP layers report
    // errors that matter through their own events.
    s.on("error", () => {});
  };
  let listener: net.Server;
  /** What the guard calls for each admitted connection (TLS: the raw socket, before its handshake). */
  let serve = (socket: net.Socket, a: ConnectionActivity) => {
    track(socket);
    const key = peerKey(socket);
    activity.set(key, a);
    socket.once("close", () => activity.delete(key));
  };

  if (opts.tls) {
    const material = await loadTlsFiles(opts.tls);
    const secure = http2.createSecureServer({
      ...material,
      allowHTTP1: true,
      requestCert: true,
      rejectUnauthorized: true,
      maxSessionMemory: 64,
      settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS },
    }, handler);
    listener = secure;
  } else {
    const h2 = http2.createServer({
      maxSessionMemory: 64,
      settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS },
    }, handler);
    // Under Deno 2.9 a connection handed over by emit("connection") gets no answer to a second
    // request, so an HTTP/1.1 answer says it closes, rather than promise keep-alive and then
    // close (a client's POST on that connection could meet the close).
    const h1 = http.createServer((req, res) => {
      res.setHeader("connection", "close");
      return handler(req, res);
    });
    // A plain TCP listener hands each connection to HTTP/2 or HTTP/1.1 by its first bytes.
    listener = net.createServer();
    const register = serve;
    serve = (socket, a) => {
      register(socket, a);
      sniff(socket, (isHttp2) => (isHttp2 ? h2 : h1).emit("connection", socket));
    };
  }

  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error & { code?: string }) => {
      const why = e.code === "EADDRINUSE"
        ? `port ${port} is already in use (another agent?); choose another with --rpc-port`
        : e.code === "EADDRNOTAVAIL"
        ? `${host} is not an address of this machine; check --bind`
        : e.message;
      reject(new RpcServerError(`cannot listen for RPC on ${host}:${port}: ${why}`));
    };
    listener.once("error", onError);
    listener.listen(port, host, () => {
      listener.off("error", onError);
      resolve();
    });
  });
  const guarded = guardListener(listener, {
    name: "RPC listener",
    limits: { ...RPC_CONNECTION_LIMITS, ...opts.limits },
    probeEveryMs: opts.probeEveryMs,
    warn: opts.warn,
    serve: (socket, a) => serve(socket, a),
    // A connection the guard gives up on has no call in flight (idle, or silent): its socket is
    // closed, not its session with a GOAWAY. A GOAWAY reaching a client whose session holds
    // closed streams (a deploy's transfer connection) aborted that whole agent in Deno's HTTP/2
    // layer (nghttp2's find_stream_on_goaway_func assertion); a closed socket only ends the
    // session, and the client's next call opens another.
    close: (socket) => socket.destroy(),
  });
  const bound = (listener.address() as net.AddressInfo).port;
  const urlHost = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  ownAuthority = `${urlHost}:${bound}`;
  let closing: Promise<void> | null = null;
  return {
    host,
    port: bound,
    tls: opts.tls !== undefined,
    url: `${opts.tls ? "https" : "http"}://${urlHost}:${bound}`,
    close(graceMs = 1000) {
      closing ??= (async () => {
        guarded.stop();
        const stopped = new Promise<void>((r) => listener.close(() => r()));
        // The calls in flight finish within the grace, then every connection is closed. Not
        // with GOAWAY: one reaching a client whose session holds closed streams (a deploying
        // agent's transfer connection) aborted that agent (see the guard's close above).
        const deadline = Date.now() + graceMs;
        while (inFlight > 0 && sockets.size > 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 10));
        }
        for (const s of sockets) s.destroy();
        await stopped;
      })();
      return closing;
    },
  };
}

/**
 * Answer a call to a path no service serves: a gRPC or gRPC-web request gets HTTP 200 with
 * UNIMPLEMENTED in its headers (trailers-only), as gRPC says, since its clients read a bare 404
 * as a transport failure; any other request (Connect, a browser) a plain 404.
 */
function unknownMethod(
  req: { url?: string; headers: Record<string, unknown> },
  res: { writeHead(status: number, headers?: Record<string, string>): unknown; end(): unknown },
  services: ReadonlySet<string>,
): void {
  const type = String(req.headers["content-type"] ?? "");
  if (!/^application\/grpc(-web(-text)?)?([+;]|$)/.test(type)) {
    res.writeHead(404);
    res.end();
    return;
  }
  const path = (req.url ?? "").split("?")[0];
  const [, service, method] = /^\/([^/]+)\/([^/]+)$/.exec(path) ?? [];
  const message = !service
    ? `malformed method path ${path}: gRPC paths are /package.Service/Method`
    : services.has(service)
    ? `unknown method ${method} for service ${service}`
    : `unknown service ${service}`;
  res.writeHead(200, {
    "content-type": type.split(";")[0],
    "grpc-status": "12",
    "grpc-message": grpcPercentEncode(message),
  });
  res.end();
}

type Http2Req = http2.Http2ServerRequest;
type Http2Res = http2.Http2ServerResponse;

/** A method registered through the routes that is served on the lean path. */
type LeanMethod =
  | {
    kind: "bidi";
    method: BidiMethod<DescMessage, DescMessage>;
    impl: BidiImpl<DescMessage, DescMessage>;
  }
  | {
    kind: "server";
    method: { path: string; input: DescMessage };
    impl: RawServerStream<DescMessage>;
  };

/** Request size bounds by method: `largeBytes` for the paths in `large`, `bytes` for the rest. */
interface MessageLimits {
  large: ReadonlySet<string>;
  largeBytes: number;
  bytes: number;
}

/**
 * The router as `routes` sees it, noting (by path) each bidirectional method's implementation
 * and each server-streaming method's raw version as services are registered; everything is
 * registered with Connect as well (its path serves other protocols, compressed calls and traced
 * ones), the methods of `limits.large` once more with their own bound (the adapter keeps a
 * path's last registration).
 */
function capturingLean(
  router: ConnectRouter,
  into: Map<string, LeanMethod>,
  limits: MessageLimits,
  services: Set<string>,
): ConnectRouter {
  const wrapped = {
    get handlers() {
      return router.handlers;
    },
    service(service: DescService, impl: Record<string | symbol, unknown>, options?: unknown) {
      services.add(service.typeName);
      const raw = (impl[RAW_SERVER_STREAMS] ?? {}) as Record<string, unknown>;
      for (const m of service.methods) {
        const path = `/${service.typeName}/${m.name}`;
        const fn = impl[m.localName];
        const rawFn = raw[m.localName];
        if (m.methodKind === "bidi_streaming" && typeof fn === "function") {
          into.set(path, {
            kind: "bidi",
            method: { path, input: m.input, output: m.output },
            impl: (requests) => fn.call(impl, requests, undefined),
          });
        } else if (m.methodKind === "server_streaming" && typeof rawFn === "function") {
          into.set(path, {
            kind: "server",
            method: { path, input: m.input },
            impl: (request, signal) => rawFn.call(raw, request, signal),
          });
        }
      }
      router.service(service, impl as never, options as never);
      for (const m of service.methods) {
        const fn = impl[m.localName];
        if (!limits.large.has(`/${service.typeName}/${m.name}`) || typeof fn !== "function") {
          continue;
        }
        router.rpc(m as never, fn.bind(impl) as never, {
          ...(options as object | undefined),
          readMaxBytes: limits.largeBytes,
        });
      }
      return wrapped;
    },
    rpc: router.rpc.bind(router),
  } as ConnectRouter;
  return wrapped;
}

/** A connection's peer address, the same for its raw socket, TLS socket and HTTP/2 proxy. */
function peerKey(s: { remoteAddress?: string; remotePort?: number } | undefined): string {
  return `${s?.remoteAddress}|${s?.remotePort}`;
}

/** Wait for the first bytes of a plaintext connection and say whether they open HTTP/2. */
function sniff(socket: net.Socket, route: (isHttp2: boolean) => void): void {
  let head = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    head = Buffer.concat([head, chunk]);
    // "PRI" is enough: no HTTP/1.1 method starts with it.
    if (head.length < 3) return;
    socket.off("data", onData);
    socket.pause();
    socket.unshift(head);
    route(head.subarray(0, 3).toString("latin1") === "PRI");
    socket.resume();
  };
  socket.on("data", onData);
}
