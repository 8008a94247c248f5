/**
 * The metrics listener: `GET /metrics` (Prometheus text format) and `GET /health` (liveness;
 * `/health?ready=1` answers 503 until the agent can serve requests, for readiness probes).
 *
 * @module
 */
import * as http from "node:http";
import * as net from "node:net";
import {
  type ConnectionActivity,
  type ConnectionLimits,
  guardListener,
  type Warn,
} from "../net/mod.ts";

/** What the listener serves. */
export interface MetricsServerOptions {
  /** Address to bind; default 127.0.0.1. */
  host?: string;
  /** Port; default 9090; 0 picks a free one (see {@linkcode MetricsServer.port}). */
  port?: number;
  /** The exposition text and its content type. */
  metrics: () => Promise<{ text: string; contentType: string }>;
  /** Whether the agent serves requests now, and why not. */
  readiness: () => { serving: boolean; detail?: string };
  /** Connection bounds; default {@linkcode METRICS_CONNECTION_LIMITS}. */
  limits?: Partial<ConnectionLimits>;
  /** How often the listener checks it still accepts (ms; 0: never); default 5 s. */
  probeEveryMs?: number;
  /** Where warnings go (accept failures); default a JSON line on stderr. */
  warn?: Warn;
}

/**
 * The metrics listener's bounds. Scrapers and probes hold a handful of connections; a request
 * must come within 10 s of connecting (slow-loris sockets go), and a keep-alive connection may
 * idle 60 s, longer than common scrape intervals (15–30 s), so Prometheus keeps its connection.
 */
export const METRICS_CONNECTION_LIMITS: ConnectionLimits = {
  maxConnections: 128,
  silentMs: 10_000,
  idleMs: 60_000,
};

/** A running metrics listener. */
export interface MetricsServer {
  /** Port bound (the real one when 0 was asked for). */
  readonly port: number;
  /** Stop listening and cut open connections. */
  close(): Promise<void>;
}

/** The metrics port users see (DESIGN.md "Names users see"). */
export const DEFAULT_METRICS_PORT = 9090;

/**
 * Start the metrics listener; resolves once it is bound.
 *
 * @example
 * ```ts
 * const server = await startMetricsServer({
 *   port: 0,
 *   metrics: async () => ({ text: await m.text(), contentType: m.contentType }),
 *   readiness: () => ({ serving: true }),
 * });
 * ```
 */
export async function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const host = opts.host ?? "127.0.0.1";
  const port = opts.port ?? DEFAULT_METRICS_PORT;
  const http1 = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (url.pathname === "/metrics") {
      opts.metrics().then(({ text, contentType }) => {
        res.writeHead(200, { "content-type": contentType }).end(text);
      }, (e) => {
        res.writeHead(500, { "content-type": "text/plain" }).end(`metrics failed: ${e}\n`);
      });
      return;
    }
    if (url.pathname === "/health") {
      const r = opts.readiness();
      const wantReady = url.searchParams.has("ready");
      const status = wantReady && !r.serving ? 503 : 200;
      res.writeHead(status, { "content-type": "application/json" }).end(
        JSON.stringify({ status: r.serving ? "serving" : "not_serving", detail: r.detail }) + "\n",
      );
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" }).end("try /metrics or /health\n");
  });
  // Each request marks its connection busy until answered: the guard closes only idle ones.
  const activity = new WeakMap<net.Socket, ConnectionActivity>();
  http1.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const a = activity.get(req.socket as net.Socket);
    a?.busy();
    res.once("close", () => a?.done());
  });
  const limits = { ...METRICS_CONNECTION_LIMITS, ...opts.limits };
  // The guard's idle timer is the keep-alive limit; the runtime's own (5 s) would come first.
  http1.keepAliveTimeout = limits.idleMs;
  const sockets = new Set<net.Socket>();
  // The HTTP server listens itself: under Deno 2.9 a connection handed to it from another
  // listener (emit "connection") gets no second request (keep-alive broken).
  const server = http1;
  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error & { code?: string }) => {
      const why = e.code === "EADDRINUSE"
        ? `port ${port} is already in use; choose another with --metrics-port (0 picks a free one)`
        : e.message;
      reject(new Error(`cannot listen for metrics on ${host}:${port}: ${why}`));
    };
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  const guarded = guardListener(server, {
    name: "metrics listener",
    limits,
    probeEveryMs: opts.probeEveryMs,
    warn: opts.warn,
    // The HTTP server serves the socket (its own "connection" handler); the guard keeps count.
    serve: (socket, a) => {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
      activity.set(socket, a);
    },
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        guarded.stop();
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
