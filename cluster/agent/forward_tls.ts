/**
 * How a forwarding agent (`--no-model`) reaches a member whose HTTP API serves HTTPS: over
 * `node:https`, because the member is dialled at its gossip address while its certificate names
 * it otherwise (fetch checks the address only). A certificate passes when its chain leads to a
 * trusted CA (the public roots, the cluster's `--tls-ca`, or the CAs this agent's own
 * `--api-tls-cert` file carries after its leaf) and it names the member's node id (certificates
 * of `llmctl certs init --nodes` reused for the API), a service name of this agent's own API
 * certificate (agents behind one name sharing one certificate; not its addresses or localhost),
 * or the address dialled.
 *
 * @module
 */
import * as https from "node:https";
import { isIP } from "node:net";
import { Readable } from "node:stream";
import { rootCertificates } from "node:tls";
import { identityCheck } from "../rpc/mod.ts";
import type { ApiTlsMaterial } from "../tls/mod.ts";

/** What this agent trusts in a member's HTTPS API. */
export interface ApiTlsTrust {
  /** CA certificates (PEM). */
  ca: string[];
  /** Names of this agent's own API certificate, each also accepted in a member's. */
  names: string[];
}

/**
 * The trust of an agent with the cluster CA file `caFile` (`--tls-ca`) and its own API
 * certificate. An unreadable CA file adds nothing: the RPC listener refuses to start on it.
 */
export async function apiTlsTrust(caFile?: string, own?: ApiTlsMaterial): Promise<ApiTlsTrust> {
  const clusterCa = caFile ? await Deno.readTextFile(caFile).catch(() => "") : "";
  const chain = own?.cert.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  return {
    ca: [...rootCertificates, ...(clusterCa ? [clusterCa] : []), ...(chain?.slice(1) ?? [])],
    names: (own?.names ?? []).filter(sharedName),
  };
}

/**
 * Whether a name of this agent's own API certificate may stand for a member's: a service name
 * (`api.example.com`), not an address or `localhost`. Every certificate `llmctl certs` makes
 * lists `localhost`, 127.0.0.1 and ::1, so accepting those would let any certificate of the
 * cluster CA pass as any member, and receive the client's API key.
 */
function sharedName(name: string): boolean {
  return name !== "localhost" && !name.endsWith(".localhost") && !isIP(name);
}

/** Statuses whose answers have no body (a Response refuses one). */
const NO_BODY = new Set([101, 103, 204, 205, 304]);

/**
 * Send one request to member `nodeId`'s HTTPS API at `url` and answer it as fetch would (the
 * body streams; nothing is decompressed: the forwarder asks for no encoding).
 */
export function fetchOverTls(
  url: string,
  init: { method?: string; headers: Headers; body?: string; signal: AbortSignal },
  trust: ApiTlsTrust,
  nodeId: string,
): Promise<Response> {
  const u = new URL(url);
  return new Promise<Response>((resolve, reject) => {
    if (init.signal.aborted) return reject(init.signal.reason);
    const headers: Record<string, string> = {};
    init.headers.forEach((v, k) => headers[k] = v);
    if (init.body !== undefined) {
      headers["content-length"] = String(new TextEncoder().encode(init.body).length);
    }
    const req = https.request({
      hostname: u.hostname.replace(/^\[(.*)\]$/, "$1"),
      port: Number(u.port) || 443,
      path: `${u.pathname}${u.search}`,
      method: init.method ?? "GET",
      headers,
      // A connection of its own: one pooled by address would skip the check of this node id.
      agent: false,
      ca: trust.ca,
      checkServerIdentity: identityCheck(
        [nodeId, ...trust.names],
        `the HTTPS certificate of ${nodeId}'s API`,
      ),
    }, (res) => {
      const out = new Headers();
      for (const [name, value] of Object.entries(res.headers)) {
        if (value === undefined) continue;
        for (const v of Array.isArray(value) ? value : [value]) out.append(name, v);
      }
      const status = res.statusCode ?? 502;
      const body = NO_BODY.has(status)
        ? null
        : Readable.toWeb(res) as unknown as ReadableStream<Uint8Array>;
      if (body === null) res.resume();
      resolve(new Response(body, { status, statusText: res.statusMessage, headers: out }));
    });
    const abort = () => req.destroy(init.signal.reason as Error);
    init.signal.addEventListener("abort", abort, { once: true });
    req.once("close", () => init.signal.removeEventListener("abort", abort));
    req.once("error", reject);
    req.end(init.body);
  });
}
