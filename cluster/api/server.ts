/**
 * The OpenAI-compatible HTTP listener of an agent (`--http-port`, default 8080):
 * `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions` (JSON or SSE with
 * `stream: true`), `GET /health` (slots, queue, placement; no key needed, for probes).
 *
 * HTTPS with `--api-tls-cert` and `--api-tls-key` (the {@linkcode ApiServerOptions.tls} option).
 *
 * Built on `node:http`, like the metrics and RPC listeners: one way to bind, report the real port
 * and cut open connections on shutdown across the agent, and a `close` event on the response
 * that tells a client went away mid-generation (which aborts the generation, freeing its slot).
 *
 * @module
 */
import * as http from "node:http";
import * as https from "node:https";
import * as net from "node:net";
import { createHash, timingSafeEqual } from "node:crypto";
import { isLoopback } from "../rpc/mod.ts";
import { type ConnectionActivity, guardListener } from "../net/mod.ts";
import { ApiError, toApiError } from "./errors.ts";
import { findModel, type GenerationParams, type TextGenerator } from "./generator.ts";
import { type Endpoint, parseRequest } from "./request.ts";
import { planTools } from "./tools.ts";
import { splitsReasoning } from "./reasoning.ts";
import { complete, completeBatch } from "./answer.ts";
import { methodNotAllowed, readBody, sendError, sendJson } from "./http_io.ts";

/** The HTTP API port users see (DESIGN.md "Names users see"). */
export const DEFAULT_HTTP_PORT = 8080;
/** Largest request body accepted, bytes (413 beyond). */
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;

/** Options of {@linkcode startApiServer}. */
export interface ApiServerOptions {
  /** Address to bind; default 127.0.0.1. */
  host?: string;
  /** Port; default 8080; 0 picks a free one (see {@linkcode ApiServer.port}). */
  port?: number;
  /** What serves the requests. */
  generator: TextGenerator;
  /**
   * Serve HTTPS with this certificate chain and key (PEM; `--api-tls-cert`, `--api-tls-key`).
   * Clients check it as any HTTPS server's: no client certificate is asked for.
   */
  tls?: { cert: string; key: string };
  /**
   * The agent's RPC runs mutual TLS: without `tls` this listener still speaks plain HTTP, which
   * a warning says when it is reachable from the network (API keys would cross it in the clear).
   */
  rpcTls?: boolean;
  /** When set, every /v1 request needs `Authorization: Bearer <apiKey>` (401 otherwise). */
  apiKey?: string;
  /** Largest request body, bytes; default {@linkcode DEFAULT_MAX_BODY_BYTES}. */
  maxBodyBytes?: number;
  /**
   * Origins browsers may call the API from ("*" for any); none by default. Preflight OPTIONS
   * requests are answered before the API key is checked (browsers send them without it).
   */
  corsOrigins?: string[];
  /** A connection must send a request's headers within this many ms; default 10 s. */
  headersTimeoutMs?: number;
  /** A request's body must arrive within this many ms (408 otherwise); default 30 s. */
  bodyTimeoutMs?: number;
  /**
   * Most open connections; beyond, the oldest with no request in flight is closed to make room,
   * and with every one busy a new one is answered 503 and closed. Default 1024.
   */
  maxConnections?: number;
  /** How often the listener checks it still accepts (ms; 0: never); default 5 s. */
  probeEveryMs?: number;
  /**
   * A stream that sent nothing for this many ms sends an SSE comment (`: keep-alive`), so
   * proxies and clients with read timeouts wait for a queued request; default 15 s.
   */
  sseKeepAliveMs?: number;
  /** Where requests go instead of the generator, when it takes them (see ApiForward). */
  forward?: ApiForward;
  /** Log hook: the server's failures at "error", clients' mistakes and departures below it. */
  log?: (
    level: "debug" | "warn" | "error",
    msg: string,
    fields?: Record<string, unknown>,
  ) => void;
}

/** What a connection over the cap is answered before it is closed. */
const TOO_MANY_CONNECTIONS = (() => {
  const body = JSON.stringify({
    error: {
      message: "too many open connections; retry later",
      type: "server_error",
      param: null,
      code: "too_many_connections",
    },
  });
  return "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n" +
    "content-type: application/json\r\nconnection: close\r\n" +
    `content-length: ${body.length}\r\n\r\n${body}`;
})();

/**
 * Hands a /v1 request to another server instead of answering it here (an agent that serves no
 * model proxies it to one that does); resolves whether it answered. `readBody` reads the body
 * within the listener's size and time bounds. Called once the origin and API key are checked.
 */
export type ApiForward = (
  req: http.IncomingMessage,
  res: http.ServerResponse,
  readBody: () => Promise<string>,
) => Promise<boolean>;

/** A running API listener. */
export interface ApiServer {
  /** Port bound (the real one when 0 was asked for). */
  readonly port: number;
  /** Stop listening and cut open connections (their generations are cancelled). */
  close(): Promise<void>;
}

/**
 * Start the API listener; resolves once it is bound.
 *
 * @example
 * ```ts
 * const api = await startApiServer({ port: 0, generator: agentGenerator });
 * const client = new OpenAI({ baseURL: `http://127.0.0.1:${api.port}/v1`, apiKey: "none" });
 * ```
 */
export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const host = opts.host ?? "127.0.0.1";
  const port = opts.port ?? DEFAULT_HTTP_PORT;
  const keyHash = opts.apiKey ? sha256(opts.apiKey) : undefined;
  const headersTimeout = opts.headersTimeoutMs ?? 10_000;
  const corsOrigins = opts.corsOrigins ?? [];
  const bodyTimeout = opts.bodyTimeoutMs ?? 30_000;
  // What each connection's guard is told (cluster/net): a request marks it busy until answered.
  // Keyed by the peer's address and port: over HTTPS a request's socket is the TLS socket, not
  // the TCP socket the guard was handed.
  const activity = new Map<string, ConnectionActivity>();
  const peerOf = (s: net.Socket) => `${s.remoteAddress}|${s.remotePort}`;
  /**
   * Log a failed request at a level by its status (clients' mistakes and overload answers are
   * not the server's failures) and return what the client is told. An internal error's stack is
   * logged under DLLM_DEBUG, as its message asks.
   */
  const report = (e: unknown, req: http.IncomingMessage, msg: string): ApiError => {
    const err = toApiError(e);
    // 499: the client went away (readBody), nobody's failure.
    const level = err.status >= 500 && err.status !== 503
      ? "error"
      : err.status >= 429 && err.status !== 499
      ? "warn"
      : "debug";
    const stack = err.status === 500 && Deno.env.get("DLLM_DEBUG")
      ? (e as Error)?.stack
      : undefined;
    opts.log?.(level, msg, {
      status: err.status,
      error: err.message,
      url: req.url?.slice(0, 200),
      ...(stack ? { stack } : {}),
    });
    return err;
  };
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    // Pipelined requests overlap: the connection idles (its headers timeout runs) only once
    // every one of them is answered.
    const a = activity.get(peerOf(req.socket));
    a?.busy();
    let answered = false;
    const onAnswered = () => {
      if (answered) return;
      answered = true;
      a?.done();
    };
    res.once("finish", onAnswered);
    res.once("close", onAnswered);
    handle(req, res).catch((e) => {
      const err = report(e, req, "api request failed");
      if (!res.headersSent) sendError(res, err);
      else res.destroy();
    }).finally(() => {
      // The answer is written: a client that does not read it gets `bodyTimeout` to take it,
      // then the connection is cut. Before, eight such clients held their connections (and their
      // answers, megabytes each) for as long as they stayed connected, and at the connection cap
      // every new client, /health too, got 503.
      if (answered || res.writableFinished) return;
      const cut = setTimeout(() => {
        if (!res.writableFinished) res.destroy();
      }, bodyTimeout);
      const clear = () => clearTimeout(cut);
      res.once("finish", clear);
      res.once("close", clear);
    });
  };
  const http1 = opts.tls
    ? https.createServer({ cert: opts.tls.cert, key: opts.tls.key }, onRequest)
    : http.createServer(onRequest);
  // The guard's idle timer is the keep-alive limit; the runtime's own (Node's 5 s default) closed
  // idle connections before it and announced `Keep-Alive: timeout=5` whatever the flag said.
  http1.keepAliveTimeout = headersTimeout;

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    // "//v1/models" parsed against a base is a URL of host "v1": take the request target as a
    // path (an absolute-form target keeps its own), and read runs of slashes as one.
    const target = req.url ?? "/";
    const path = new URL(target.startsWith("/") ? `http://x${target}` : target, "http://x")
      .pathname.replace(/\/{2,}/g, "/").replace(/\/+$/, "") || "/";
    const origin = req.headers.origin;
    const cors = origin !== undefined && corsOrigins.length > 0 &&
      (corsOrigins.includes("*") || corsOrigins.includes(origin));
    if (cors) {
      res.setHeader("access-control-allow-origin", corsOrigins.includes("*") ? "*" : origin!);
      res.setHeader("vary", "origin");
    }
    if (req.method === "OPTIONS") {
      req.resume();
      if (!cors) {
        return sendError(res, new ApiError(403, `origin ${origin ?? "(none)"} is not allowed`));
      }
      res.writeHead(204, {
        "access-control-allow-methods": "GET, POST, OPTIONS",
        "access-control-allow-headers": String(
          req.headers["access-control-request-headers"] ?? "authorization, content-type",
        ),
        "access-control-max-age": "600",
      }).end();
      return;
    }
    if (path === "/health") {
      if (req.method !== "GET" && req.method !== "HEAD") {
        return sendError(res, methodNotAllowed(), "GET, HEAD");
      }
      return sendJson(res, 200, opts.generator.health());
    }
    if (!path.startsWith("/v1/")) {
      return sendError(res, new ApiError(404, `no route ${path}; the API lives under /v1`));
    }
    // A browser page from an origin not allowed reads no answer (no CORS headers), but a
    // "simple" request (a text/plain POST, no preflight) would still run: any web page could
    // spend this agent's compute through a visitor's browser. Browsers always send Origin on
    // such requests; other clients do not.
    if (origin !== undefined && !cors) {
      req.resume();
      return sendError(
        res,
        new ApiError(
          403,
          `origin ${origin.slice(0, 200)} is not allowed to call this API (a browser page); ` +
            `start the agent with --cors-origin ${origin.slice(0, 200)} to allow it`,
        ),
      );
    }
    if (keyHash) {
      const auth = req.headers.authorization ?? "";
      const m = /^Bearer\s+(.+)$/i.exec(auth);
      if (!m || !timingSafeEqual(sha256(m[1].trim()), keyHash)) {
        req.resume();
        return sendError(
          res,
          new ApiError(
            401,
            m
              ? "incorrect API key; send the agent's --api-key as Authorization: Bearer <key>"
              : "missing API key; send Authorization: Bearer <key> (the agent's --api-key)",
            "invalid_request_error",
            "invalid_api_key",
          ),
        );
      }
    }
    const bodyLimit = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    if (opts.forward && await opts.forward(req, res, () => readBody(req, bodyLimit, bodyTimeout))) {
      return;
    }
    if (path === "/v1/models" || path.startsWith("/v1/models/")) {
      if (req.method !== "GET" && req.method !== "HEAD") {
        return sendError(res, methodNotAllowed(), "GET, HEAD");
      }
      const models = opts.generator.models().map((m) => ({
        id: m.id,
        object: "model",
        created: m.created,
        owned_by: "distributed-llm",
        context_length: m.contextLength,
      }));
      if (path === "/v1/models") return sendJson(res, 200, { object: "list", data: models });
      const raw = path.slice("/v1/models/".length);
      let id: string;
      try {
        id = decodeURIComponent(raw);
      } catch {
        // A broken %-escape names no model: the client's mistake, not the server's failure.
        id = raw;
      }
      // The names generation takes: an id GET /v1/models/{id} refuses must not work as "model".
      const found = findModel(opts.generator, id);
      if (!found) return sendError(res, unknownModel(id, models.map((m) => m.id)));
      return sendJson(res, 200, models.find((m) => m.id === found.id));
    }
    const endpoint: Endpoint | undefined = path === "/v1/chat/completions"
      ? "chat"
      : path === "/v1/completions"
      ? "completion"
      : undefined;
    if (!endpoint) {
      req.resume();
      return sendError(res, new ApiError(404, `no route ${path}`, undefined, "unknown_url"));
    }
    if (req.method !== "POST") return sendError(res, methodNotAllowed(), "POST");
    // The body is read as it comes: a compressed one would fail as "not valid JSON", and a
    // plain one labelled compressed was taken as it was.
    const encoding = String(req.headers["content-encoding"] ?? "identity").trim().toLowerCase();
    if (encoding !== "identity" && encoding !== "") {
      req.resume();
      throw new ApiError(
        415,
        `Content-Encoding ${encoding.slice(0, 40)} is not supported; send the body uncompressed`,
      );
    }
    const body = await readBody(req, bodyLimit, bodyTimeout);
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch (e) {
      throw new ApiError(400, `the request body is not valid JSON: ${(e as Error).message}`);
    }
    const parsed = parseRequest(endpoint, json);
    const served = opts.generator.models();
    // Looked up here as GET /v1/models/{id} does, so an unknown model is a 404 with param
    // "model" (an agent serving none answers for itself: start it with --model).
    const info = findModel(opts.generator, parsed.params.model);
    if (served.length > 0 && !info) {
      throw unknownModel(parsed.params.model, served.map((m) => m.id));
    }
    // The model's template decides how tools are rendered and how calls are read back.
    if (parsed.tools) parsed.toolParser = planTools(parsed.tools, parsed.params, info?.toolFormat);
    // A thinking template's output opens with its reasoning, returned apart unless told not to.
    // Under response_format the JSON constraint then starts after the think block (vLLM's way:
    // the model reasons before it answers); before, it held from the first token, and after a
    // template that opens the block the value went to reasoning_content, content null. A forced
    // tool call's output is the call from its first token: not split.
    parsed.splitReasoning = parsed.endpoint === "chat" && !parsed.toolParser?.forced &&
      splitsReasoning(parsed.reasoningFormat, parsed.stream, info?.thinking);
    if (parsed.splitReasoning && parsed.params.json) parsed.params.jsonAfterReasoning = true;
    for (const p of parsed.batch ?? [parsed.params]) unsupported(p, opts.generator);
    const capacity = opts.generator.capacity?.();
    if (parsed.batch && capacity !== undefined && parsed.batch.length > capacity) {
      // More prompts than slots and queue together would be a 429 however long it retried.
      throw new ApiError(
        400,
        `${parsed.batch.length} prompts in one request, but this agent takes at most ` +
          `${capacity} at once (--max-requests + --queue-size); send fewer per request`,
        "invalid_request_error",
        "invalid_value",
        "prompt",
      );
    }
    if (parsed.batch) await completeBatch(req, res, parsed, parsed.batch, opts.generator);
    else {
      await complete(
        req,
        res,
        parsed,
        opts.generator,
        { keepAliveMs: opts.sseKeepAliveMs ?? 15_000, writeTimeoutMs: bodyTimeout },
        (e) => report(e, req, "api stream failed"),
      );
    }
  }

  const sockets = new Set<net.Socket>();
  // The HTTP server listens itself: under Deno 2.9 a connection handed to it from another
  // listener (emit "connection") gets no second request (keep-alive broken).
  const server = http1;
  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error & { code?: string }) => {
      const why = e.code === "EADDRINUSE"
        ? `port ${port} is already in use; choose another with --http-port (0 picks a free one)`
        : e.message;
      reject(new Error(`cannot listen for the HTTP API on ${host}:${port}: ${why}`));
    };
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  // A connection gets `headersTimeout` to send each request's headers, and to idle between
  // keep-alive requests: slow-loris connections cannot hold sockets open. At the cap, the oldest
  // connection with nothing in flight makes room; when all are busy, the new one gets a 503. The
  // guard also reopens the listener when an EMFILE left it deaf (cluster/net/node_listener.ts).
  const guarded = guardListener(server, {
    name: "HTTP API listener",
    limits: {
      maxConnections: opts.maxConnections ?? 1024,
      silentMs: headersTimeout,
      idleMs: headersTimeout,
    },
    probeEveryMs: opts.probeEveryMs,
    warn: opts.log && ((msg, fields) => opts.log!("warn", msg, fields)),
    // Over HTTPS the answer would have to be encrypted: that connection is only closed.
    refuse: (s) => opts.tls ? s.destroy() : s.end(TOO_MANY_CONNECTIONS),
    // The HTTP server serves the socket (its own "connection" handler); the guard keeps count.
    serve: (socket, a) => {
      const peer = peerOf(socket);
      sockets.add(socket);
      socket.once("close", () => {
        sockets.delete(socket);
        if (activity.get(peer) === a) activity.delete(peer);
      });
      socket.setNoDelay(true);
      activity.set(peer, a);
    },
  });
  if (!isLoopback(host) && !opts.apiKey) {
    opts.log?.(
      "warn",
      `the HTTP API on ${host} is ${
        opts.tls ? "open" : "plaintext and open"
      } to anyone who can reach it; set --api-key`,
    );
  } else if (!isLoopback(host) && opts.rpcTls && !opts.tls) {
    opts.log?.(
      "warn",
      `the HTTP API on ${host} is plain HTTP although the agent's RPC uses TLS: its API key ` +
        `and prompts cross the network in the clear; give it --api-tls-cert and --api-tls-key, ` +
        `put a TLS-terminating proxy or ingress in front of it, or keep it on a trusted network`,
    );
  }
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

/** A 400 for what the request asks of the generator beyond its features (never ignored). */
function unsupported(p: GenerationParams, generator: TextGenerator): void {
  const f = generator.features ?? {};
  if (p.json && !f.json && p.assistantPrefix !== undefined) {
    throw new ApiError(
      400,
      'tool_choice "required" or a named function needs JSON-constrained sampling, which this ' +
        'agent does not apply; send tool_choice "auto"',
      "invalid_request_error",
      "invalid_value",
      "tool_choice",
    );
  }
  if (p.json && !f.json) {
    throw new ApiError(
      400,
      "response_format json_object/json_schema is not available from this agent (its sampling " +
        "does not apply JSON constraints); leave response_format out or use type text",
      "invalid_request_error",
      "invalid_value",
      "response_format",
    );
  }
  if (p.promptTokens && !f.promptTokens) {
    throw new ApiError(
      400,
      "prompts as token ids are not available from this agent; send the prompt as text",
      "invalid_request_error",
      "invalid_value",
      "prompt",
    );
  }
}

function unknownModel(id: string, known: string[]): ApiError {
  return new ApiError(
    404,
    `model ${id} is not served here (this cluster serves ${known.join(", ") || "no model"})`,
    "invalid_request_error",
    "model_not_found",
    "model",
  );
}

function sha256(s: string): Uint8Array {
  return createHash("sha256").update(s).digest();
}
