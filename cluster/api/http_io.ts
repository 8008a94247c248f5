/**
 * The HTTP plumbing under the API's routes: reading a request body within a size and time
 * bound, and sending JSON answers and OpenAI-shaped errors.
 *
 * @module
 */
import type * as http from "node:http";
import { ApiError } from "./errors.ts";

/** A request's body as text: a 413 past `limit` bytes, a 408 if it takes over `timeoutMs`. */
export function readBody(
  req: http.IncomingMessage,
  limit: number,
  timeoutMs: number,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new ApiError(408, `the request body did not arrive within ${timeoutMs} ms`));
      // Answer, then close: the rest of a slow body is not worth waiting for.
      req.socket.once("drain", () => req.socket.destroy());
      setTimeout(() => req.socket.destroy(), 100);
    }, timeoutMs);
    req.once("end", () => clearTimeout(timer));
    req.once("error", () => clearTimeout(timer));
    const declared = Number(req.headers["content-length"] ?? 0);
    const tooBig = () =>
      new ApiError(
        413,
        `the request body is larger than ${limit} bytes`,
        "invalid_request_error",
        "request_too_large",
      );
    if (declared > limit) {
      req.resume();
      return reject(tooBig());
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    req.on("data", (c: Uint8Array) => {
      size += c.length;
      if (size > limit) {
        req.removeAllListeners("data");
        req.resume();
        reject(tooBig());
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => {
      const all = new Uint8Array(size);
      let at = 0;
      for (const c of chunks) {
        all.set(c, at);
        at += c.length;
      }
      resolve(new TextDecoder().decode(all));
    });
    // The client went away mid-body (node's "aborted"): no failure of the agent, answered to
    // nobody; logged at debug as a client's doing (it was an error-level "internal error" line
    // per disconnect).
    req.on(
      "error",
      (e: Error) =>
        reject(new ApiError(499, `the client went away while sending the request (${e.message})`)),
    );
  });
}

/** Answer `body` as JSON with `status` (and any extra `headers`). */
export function sendJson(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": new TextEncoder().encode(text).length,
    ...headers,
  }).end(text);
}

/**
 * Answer an ApiError as OpenAI's error body, saying when to retry a 429 or 503 (and, for a 405,
 * the methods the route takes: `allow`).
 */
export function sendError(res: http.ServerResponse, e: ApiError, allow?: string): void {
  if (allow !== undefined) res.setHeader("allow", allow);
  // Overload and no-placement answers say when to come back (OpenAI's clients honour it).
  const retry = e.status === 429 || e.status === 503 ? { "retry-after": "1" } : undefined;
  // A 408 closes the connection (readBody drops the rest of the slow body): say so, rather
  // than promise keep-alive and then close.
  const close = e.status === 408 ? { connection: "close" } : undefined;
  sendJson(res, e.status, e.body(), retry ?? close);
}

/** The 405 for a method a route does not take. */
export function methodNotAllowed(): ApiError {
  return new ApiError(405, "method not allowed", "invalid_request_error", "method_not_allowed");
}
