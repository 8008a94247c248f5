/**
 * Client transports to an agent's RPC port, for peers (stage to stage) and llmctl: gRPC over
 * HTTP/2 by default, Connect or gRPC-web on request; client certificate when TLS files are
 * given; gzip both ways for messages worth compressing.
 *
 * @module
 */
import { isIP } from "node:net";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import type { DescMessage } from "@bufbuild/protobuf";
import type { Interceptor, Transport } from "@connectrpc/connect";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import { type ClientTls, loadClientTls } from "../tls/files.ts";
import { DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_RPC_PORT } from "./server.ts";
import { type BidiCall, type BidiMethod, openBidi } from "./grpc_stream.ts";
import { h2Socket } from "./h2_socket.ts";

/** Wire protocol of a transport; the server speaks all three on one port. */
export type RpcProtocol = "grpc" | "connect" | "grpc-web";

/** Options of {@linkcode createRpcTransport}. */
export interface RpcTransportOptions {
  /** CA to trust and client certificate + key (paths or PEM): turns on TLS. */
  tls?: ClientTls;
  /** Protocol; default "grpc". */
  protocol?: RpcProtocol;
  /** HTTP version for "connect" and "grpc-web"; default "2" ("grpc" is always HTTP/2). */
  httpVersion?: "1.1" | "2";
  /**
   * Compress requests with gzip (above 1 KiB) and accept gzip responses; default true. False
   * turns compression off both ways (model chunks: weights do not compress, gzip costs CPU).
   */
  gzip?: boolean;
  /** Largest message accepted, bytes. */
  maxMessageBytes?: number;
  /** Client interceptors (e.g. trace context propagation), run in order. */
  interceptors?: Interceptor[];
  /**
   * HTTP/2 receive windows, bytes: per stream and for the whole connection. Default: node's
   * 64 KiB, which makes a sender wait for a WINDOW_UPDATE every 64 KiB (bulk model chunks want
   * megabytes; activations and control traffic are small and keep the default).
   */
  window?: { stream: number; connection: number };
  /**
   * While a stream is open and silent for `intervalMs`, PING the agent; no answer within
   * `timeoutMs` closes the connection, so a stream to a hung agent (stopped, or its host gone
   * without a FIN) fails instead of waiting forever. Default: no PINGs.
   */
  keepalive?: { intervalMs: number; timeoutMs: number };
}

/** A Connect transport that also owns its HTTP/2 connection, closed with `close()`. */
export interface RpcTransport extends Transport {
  /** Base URL the transport talks to. */
  readonly baseUrl: string;
  /** Close the connection (calls in flight fail with CANCELED). */
  close(): void;
  /**
   * Open a bidirectional gRPC call on the lean path (grpc_stream.ts) over this transport's
   * connection; absent unless the protocol is gRPC. Interceptors do not run on it.
   */
  openBidi?<I extends DescMessage, O extends DescMessage>(
    method: BidiMethod<I, O>,
  ): Promise<BidiCall<I, O>>;
}

/**
 * Turn "host", "host:port" or a URL into a base URL; the scheme follows TLS (https with
 * certificates, http without), the port defaults to 7950.
 */
export function endpointUrl(endpoint: string, tls: boolean): string {
  const scheme = tls ? "https" : "http";
  if (/^[a-z]+:\/\//i.test(endpoint)) {
    const u = new URL(endpoint);
    if ((u.protocol === "https:") !== tls) {
      throw new Error(
        `endpoint ${endpoint} says ${u.protocol.slice(0, -1)} but TLS is ${tls ? "on" : "off"}; ` +
          `use ${scheme}:// (or host:port and let the TLS flags decide)`,
      );
    }
    return u.origin;
  }
  // The one error a user sees for a typo: which part is wrong (not the URL parser's "Invalid URL",
  // nor an agent's Unimplemented for a path taken into the URL: "127.0.0.1:7950/x").
  const notHostPort = () =>
    new EndpointError(
      `endpoint "${endpoint}" is not host:port with a port from 1 to 65535 (e.g. 10.0.0.5:7950)`,
    );
  const bracketed = /^\[[^\]]+\](?::\d+)?$/.test(endpoint);
  const bareV6 = !bracketed && (endpoint.match(/:/g)?.length ?? 0) > 1;
  if (bareV6) {
    // (A bare IPv6 address takes no port: "::1:7950" would be read as the address ::1:7950.)
    if (isIP(endpoint) !== 6) throw notHostPort();
    return `${scheme}://[${endpoint}]:${DEFAULT_RPC_PORT}`;
  }
  const hasPort = /:\d+$/.test(endpoint);
  const url = `${scheme}://${endpoint}${hasPort ? "" : `:${DEFAULT_RPC_PORT}`}`;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw notHostPort();
  }
  if (u.pathname !== "/" || u.search || u.hash || u.username || u.port === "0") throw notHostPort();
  return url;
}

/** An endpoint that is not host:port (a usage error: exit 2 in llmctl). */
export class EndpointError extends Error {
  override name = "EndpointError";
}

/**
 * Http2SessionManager that keeps one no-op "error" listener on each session it opens. Under
 * Deno a session can emit the same error twice (e.g. the server's "certificate required"
 * alert); connect-node removes its listener after the first, so the second would be an
 * uncaught error that kills the process. The call itself still fails with the first one.
 */
class GuardedSessionManager extends Http2SessionManager {
  #guarded = new WeakSet<object>();
  /** Connection receive window to set on each new session (0: keep the default). */
  connectionWindow = 0;

  override async request(
    ...args: Parameters<Http2SessionManager["request"]>
  ): ReturnType<Http2SessionManager["request"]> {
    const stream = await super.request(...args);
    const session = stream.session;
    if (session && !this.#guarded.has(session)) {
      this.#guarded.add(session);
      session.on("error", () => {});
      if (this.connectionWindow > 0) session.setLocalWindowSize(this.connectionWindow);
    }
    return stream;
  }
}

/**
 * A server certificate passes when it names one of `names` (a peer's node id, a name given) or
 * the address dialled. Agents dial each other at their advertised addresses, which certificates
 * made before the cluster's addresses were known (pod IPs, DHCP) do not list: checking the
 * address alone refused every peer. The error names them all, `what` the certificate is.
 */
export function identityCheck(names: readonly string[], what = "the certificate") {
  return (host: string, cert: PeerCertificate): Error | undefined => {
    let first: Error | undefined;
    for (const name of [...names, host]) {
      const e = checkServerIdentity(name, cert);
      if (!e) return undefined;
      first ??= e;
    }
    first!.message = `${what} names none of ${names.map((n) => `"${n}"`).join(", ")} ` +
      `nor ${host}: ${first!.message}`;
    return first;
  };
}

/**
 * Create a client transport to an agent.
 *
 * @example
 * ```ts
 * const transport = await createRpcTransport("127.0.0.1:7950");
 * const node = createClient(NodeService, transport);
 * console.log(await node.healthCheck({}));
 * transport.close();
 * ```
 */
export async function createRpcTransport(
  endpoint: string,
  opts: RpcTransportOptions = {},
): Promise<RpcTransport> {
  const material = opts.tls ? await loadClientTls(opts.tls) : undefined;
  const baseUrl = endpointUrl(endpoint, material !== undefined);
  const nodeOptions: Record<string, unknown> = material
    ? Object.fromEntries(Object.entries(material).filter(([, v]) => v !== undefined))
    : {};
  const names = [opts.tls?.serverName ?? []].flat().filter((n) => n);
  if (material && names.length) nodeOptions.checkServerIdentity = identityCheck(names);
  if (opts.window) nodeOptions.settings = { initialWindowSize: opts.window.stream };
  const protocol = opts.protocol ?? "grpc";
  const common = {
    baseUrl,
    sendCompression: opts.gzip === false ? undefined : compressionGzip,
    acceptCompression: opts.gzip === false ? [] : [compressionGzip],
    compressMinBytes: 1024,
    readMaxBytes: opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    interceptors: opts.interceptors,
  };
  const http2Wanted = protocol === "grpc" || (opts.httpVersion ?? "2") === "2";
  // Our own session manager so close() can end the HTTP/2 connection (the transport would
  // otherwise keep it open until its idle timeout, keeping the process alive).
  const sessionManager = http2Wanted
    ? new GuardedSessionManager(baseUrl, {
      idleConnectionTimeoutMs: 60_000,
      ...(opts.keepalive
        ? { pingIntervalMs: opts.keepalive.intervalMs, pingTimeoutMs: opts.keepalive.timeoutMs }
        : {}),
    }, material ? nodeOptions : { ...nodeOptions, createConnection: h2Socket })
    : undefined;
  if (sessionManager && opts.window) sessionManager.connectionWindow = opts.window.connection;
  let transport: Transport;
  if (protocol === "grpc") {
    transport = createGrpcTransport({ ...common, sessionManager: sessionManager! });
  } else if (protocol === "connect") {
    transport = sessionManager
      ? createConnectTransport({ ...common, httpVersion: "2", sessionManager })
      : createConnectTransport({ ...common, httpVersion: "1.1", nodeOptions });
  } else {
    transport = sessionManager
      ? createGrpcWebTransport({ ...common, httpVersion: "2", sessionManager })
      : createGrpcWebTransport({ ...common, httpVersion: "1.1", nodeOptions });
  }
  return {
    ...transport,
    unary: transport.unary.bind(transport),
    stream: transport.stream.bind(transport),
    baseUrl,
    close() {
      sessionManager?.abort();
    },
    openBidi: protocol === "grpc"
      ? (method) => openBidi(sessionManager!, method, common.readMaxBytes)
      : undefined,
  };
}
