/**
 * The OpenAI HTTP API of an agent that serves no model (`--no-model`): a reverse proxy to the
 * API of a member that serves one. The model's chat template, tool format and vocabulary are
 * only there, and every OpenAI feature (json_schema, logit_bias, token-id prompts, logprobs with
 * bytes, tools, reasoning, n and batches) is served by that agent's own API, so the request
 * goes through as HTTP rather than as a Generate call.
 *
 * The body is read here with the listener's size and time bounds, then sent whole; the answer
 * streams back as it comes (SSE chunk by chunk). The client's Authorization header goes along:
 * the serving agent checks its --api-key. A member whose API serves HTTPS (`--api-tls-cert`,
 * announced in gossip) is reached over TLS and its certificate checked (forward_tls.ts).
 *
 * @module
 */
import type * as http from "node:http";
import { ApiError, type ApiForward } from "../api/mod.ts";
import type { AgentMetrics } from "../telemetry/mod.ts";
import type { AgentState } from "./state.ts";
import { httpEndpoint, type Peers } from "./peers.ts";
import { FORWARDED_HEADER } from "./forward_target.ts";
import type { RequestForwarder } from "./forward_rpc.ts";
import { type ApiTlsTrust, fetchOverTls } from "./forward_tls.ts";

/**
 * Headers that describe one connection, not the request (RFC 9110 §7.6.1), and those the proxy
 * sets itself. `origin` is left out too: this agent checked it against its own --cors-origin,
 * and the serving agent, which may allow no browser origin, would refuse it again.
 */
const NOT_FORWARDED = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "host",
  "content-length",
  "accept-encoding",
  "origin",
  FORWARDED_HEADER,
]);

/** Response headers not passed back: per-connection ones, and CORS, which this agent answers. */
function passedBack(name: string): boolean {
  return !NOT_FORWARDED.has(name) && !name.startsWith("access-control-") && name !== "vary";
}

/** The `model` a JSON body names ("" when it names none or is no JSON object). */
function modelOf(body: string): string {
  try {
    const json = JSON.parse(body);
    return typeof json?.model === "string" ? json.model : "";
  } catch {
    return "";
  }
}

/**
 * The ApiForward hook of an agent: proxies /v1 requests while it serves no model (`trust`: how
 * it checks a member's HTTPS API).
 */
export function httpForwarder(
  s: AgentState,
  peers: Peers,
  forwarder: RequestForwarder,
  metrics: AgentMetrics,
  trust: ApiTlsTrust,
): ApiForward {
  const targets = forwarder.targets;
  return async (req, res, readBody) => {
    // Serving a model, a request another agent already forwarded (its view and ours disagree:
    // never send it round again), or nobody to send it to: answered here (RequestForwarder's
    // rule, as for gRPC).
    if (!forwarder.forwards({ get: (name) => req.headers[name]?.toString() })) return false;
    const body = req.method === "POST" ? await readBody() : undefined;
    if (body === undefined) req.resume();
    const model = body === undefined ? "" : modelOf(body);
    const tried = new Set<string>();
    let target = targets.choose(model, tried, true);
    if (!target) {
      throw new ApiError(
        503,
        `${s.nodeId} serves no model (--no-model) and passes requests on to an agent that does, ` +
          `but none announces an HTTP API; send the request to a serving agent's RPC port, or ` +
          `upgrade the serving agents`,
      );
    }
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      if (value === undefined || NOT_FORWARDED.has(name)) continue;
      for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
    }
    const client = req.socket.remoteAddress ?? "unknown";
    const chain = req.headers["x-forwarded-for"];
    headers.set("x-forwarded-for", chain ? `${chain}, ${client}` : client);
    headers.set(FORWARDED_HEADER, s.nodeId);
    // The client going away stops the upstream request (and with it the generation there).
    const gone = new AbortController();
    res.once("close", () => {
      if (!res.writableFinished) gone.abort(new Error("the client went away"));
    });
    for (;;) {
      const at = target;
      tried.add(at.id);
      const end = targets.open(at.id);
      const lost = peers.lostSignal(at.id);
      metrics.onForwarded("http");
      try {
        let upstream: Response;
        try {
          const url = `${httpEndpoint(at)}${req.url ?? "/"}`;
          // Gossip declaring the target dead ends a request its host left hanging (no FIN).
          const signal = AbortSignal.any([gone.signal, lost]);
          upstream = at.meta?.apiTls
            ? await fetchOverTls(url, { method: req.method, headers, body, signal }, trust, at.id)
            : await fetch(url, { method: req.method, headers, body, signal, redirect: "manual" });
        } catch (e) {
          if (gone.signal.aborted) return true;
          // Nothing reached the client yet: one more agent, if there is one.
          const next = tried.size === 1 ? targets.choose(model, tried, true) : undefined;
          const why = lost.aborted ? String(lost.reason) : (e as Error).message;
          if (next) {
            s.log("warn", "forwarded API request failed before an answer; retrying", {
              node: at.id,
              next: next.id,
              error: why,
            });
            target = next;
            continue;
          }
          throw new ApiError(
            503,
            `${at.id}, which ${s.nodeId} (--no-model) forwarded this request to, did not ` +
              `answer: ${why}; send it again`,
          );
        }
        // A serving agent shutting down or without a placement yet: another may have one.
        if (upstream.status === 503 && tried.size === 1) {
          const next = targets.choose(model, tried, true);
          if (next) {
            await upstream.body?.cancel();
            target = next;
            continue;
          }
        }
        await relay(upstream, res, () => {
          const why = lost.aborted ? String(lost.reason) : "its connection broke";
          s.log("warn", "forwarded API request cut off mid-answer", { node: at.id, error: why });
          return new ApiError(
            503,
            `${at.id}, which ${s.nodeId} (--no-model) forwarded this request to, failed mid-` +
              `answer (${why}); the output is incomplete, send it again`,
          );
        }, gone.signal);
        return true;
      } finally {
        end();
      }
    }
  };
}

/**
 * Send `upstream`'s status, headers and body to `res` as they arrive. A body cut off (the
 * serving agent died) ends an SSE stream with the error event a local failure sends (`failed`'s
 * body as a `data:` line) and cuts any other answer, whose status is already sent, as a local
 * failure after the status does.
 */
async function relay(
  upstream: Response,
  res: http.ServerResponse,
  failed: () => ApiError,
  gone: AbortSignal,
): Promise<void> {
  const out: Record<string, string | string[]> = {};
  upstream.headers.forEach((value, name) => {
    if (passedBack(name)) out[name] = value;
  });
  // fetch hands over a decoded body: its encoding and length no longer describe it.
  if (out["content-encoding"]) delete out["content-encoding"], delete out["content-length"];
  const cookies = upstream.headers.getSetCookie();
  if (cookies.length) out["set-cookie"] = cookies;
  res.writeHead(upstream.status, out);
  const sse = (out["content-type"] ?? "").toString().startsWith("text/event-stream");
  // The status line goes now: a stream's first event may be a queue's wait away.
  if (sse) res.flushHeaders();
  if (!upstream.body) return void res.end();
  const reader = upstream.body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (!res.write(value)) {
        await new Promise<void>((resolve) => {
          const resume = () => {
            res.off("drain", resume);
            res.off("close", resume);
            resolve();
          };
          res.on("drain", resume);
          res.on("close", resume);
        });
      }
      if (gone.aborted) return;
    }
  } catch {
    if (gone.aborted) return;
    if (sse) {
      res.end(`data: ${JSON.stringify(failed().body())}\n\n`);
    } else res.destroy();
    return;
  } finally {
    reader.releaseLock();
  }
  res.end();
}
