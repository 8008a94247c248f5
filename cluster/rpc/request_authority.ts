/**
 * A request's authority that Connect can parse. Connect builds each call's URL from the HTTP/2
 * `:authority` (or HTTP/1 `Host`) header and the path, and throws outside any handler when they do
 * not parse: the agent then ended with an uncaught TypeError. Deno's HTTP/2 client sends
 * `[::1]:7950` as `::1:7950`, so every call to an agent bound to IPv6 killed it, and any client
 * could do the same with a junk header. Only the path routes a call, so the authority is mended or
 * replaced by the listener's own; a path that cannot be part of a URL gets a 400.
 *
 * @module
 */
import type * as http from "node:http";

/** What of a request (HTTP/1 or the HTTP/2 compatibility API) the check reads and mends. */
type Request = Pick<http.IncomingMessage, "url" | "headers">;

/** `host:port` with a bare IPv6 host put in brackets (`::1:7950` → `[::1]:7950`); else undefined. */
function bracketed(authority: string): string | undefined {
  const i = authority.lastIndexOf(":");
  const host = authority.slice(0, i);
  if (i < 0 || !host.includes(":") || host.startsWith("[")) return undefined;
  return `[${host}]${authority.slice(i)}`;
}

function parses(path: string, authority: string): boolean {
  try {
    new URL(path, `http://${authority}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Make `req`'s authority one Connect can parse, with `own` (the listener's host:port, bracketed)
 * as the last resort; false (and a 400 answered) when its path cannot be part of a URL at all.
 */
export function mendAuthority(
  req: Request,
  res: {
    writeHead(status: number, headers: Record<string, string>): unknown;
    end(b: string): unknown;
  },
  own: string,
): boolean {
  const h2 = "authority" in req;
  const given = h2 ? (req as { authority?: string }).authority : req.headers.host;
  const path = req.url ?? "";
  if (given !== undefined && parses(path, given)) return true;
  const mended = [given && bracketed(given), own].find((a): a is string => !!a && parses(path, a));
  if (!mended) {
    res.writeHead(400, { "content-type": "text/plain", connection: "close" });
    res.end("the request's path is not a URL path\n");
    return false;
  }
  if (h2) Object.defineProperty(req, "authority", { value: mended, configurable: true });
  else req.headers.host = mended;
  return true;
}
