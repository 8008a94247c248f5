/**
 * Talking to the Hub over HTTP: the endpoint and token from the environment, bounded requests
 * (a deadline for the answer's headers, retries with backoff on 5xx, 429 and dropped
 * connections), and the Hub's error answers turned into {@linkcode HubError}s a user can act on.
 *
 * The Hub says why it refused in the `X-Error-Code` header (`RepoNotFound`, `GatedRepo`,
 * `RevisionNotFound`, `EntryNotFound`), as huggingface_hub's `hf_raise_for_status` reads it; it
 * answers 401 both for a private or gated repository asked without a token and for one that does
 * not exist, so a 401 without a code is reported as either.
 *
 * The token goes only into the `Authorization` header of requests to the Hub's own origin (a
 * redirect to a CDN drops it, as huggingface_hub does) and never into a message or log line.
 *
 * @example
 * ```ts
 * const client = hubClient({ env: Deno.env.toObject() });
 * const res = await client.request(`${client.endpoint}/api/models/owner/repo/tree/main`);
 * ```
 *
 * @module
 */
import { HubError } from "./errors.ts";

/** The public Hub; `HF_ENDPOINT` points elsewhere (a mirror), as for huggingface_hub. */
export const DEFAULT_ENDPOINT = "https://huggingface.co";

/** Settings of a Hub client; every field has a default. */
export interface HubClientOptions {
  /** Base URL (default `HF_ENDPOINT`, else https://huggingface.co). */
  endpoint?: string;
  /** Access token (default `HF_TOKEN`); sent as `Authorization: Bearer` to the endpoint only. */
  token?: string;
  /** Environment to read `HF_ENDPOINT`, `HF_TOKEN` from (default: none). */
  env?: Record<string, string | undefined>;
  /**
   * Time for an answer's headers (10 s: huggingface_hub's metadata timeout; a Hub that takes
   * longer is down, and the retries cover a slow moment).
   */
  headersTimeoutMs?: number;
  /** Time a body may send nothing before the connection counts as dropped (60 s). */
  stallTimeoutMs?: number;
  /** Attempts after the first for a retryable failure (5: about a minute of backoff in all). */
  retries?: number;
  /** First backoff; doubles per attempt, capped at 30 s (1 s). */
  backoffMs?: number;
  /** The fetch to use (tests count requests through it). */
  fetch?: typeof fetch;
}

/** A Hub client: its settings resolved. */
export interface HubClient {
  readonly endpoint: string;
  readonly hasToken: boolean;
  readonly headersTimeoutMs: number;
  readonly stallTimeoutMs: number;
  readonly retries: number;
  readonly backoffMs: number;
  /**
   * One request, following redirects by hand (at most 5): the token goes only to the endpoint's
   * origin. Throws `unavailable` for a connection failure or a missing answer within the
   * deadline; any status comes back as is (see {@linkcode statusError}).
   */
  request(url: string, init?: RequestOptions): Promise<Response>;
}

/** One request's options. */
export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  /**
   * Answer a redirect that leaves the endpoint's origin (the Hub's 302 to its CDN) instead of
   * following it: the metadata request reads the Hub's own headers on it.
   */
  stopAtCdn?: boolean;
}

/** Build a client from options and the environment. */
export function hubClient(opts: HubClientOptions = {}): HubClient {
  const env = opts.env ?? {};
  const endpoint = (opts.endpoint ?? (env.HF_ENDPOINT || DEFAULT_ENDPOINT)).replace(/\/+$/, "");
  let origin: string;
  try {
    origin = new URL(endpoint).origin;
  } catch {
    throw new HubError(
      "usage",
      `HF_ENDPOINT "${endpoint}" is not a URL (e.g. https://huggingface.co)`,
    );
  }
  const token = opts.token ?? (env.HF_TOKEN || undefined);
  const doFetch = opts.fetch ?? fetch;
  const headersTimeoutMs = opts.headersTimeoutMs ?? 10_000;
  return {
    endpoint,
    hasToken: Boolean(token),
    headersTimeoutMs,
    stallTimeoutMs: opts.stallTimeoutMs ?? 60_000,
    retries: opts.retries ?? 5,
    backoffMs: opts.backoffMs ?? 1000,
    async request(url, init = {}) {
      let at = url;
      for (let hop = 0; hop <= 5; hop++) {
        const headers: Record<string, string> = {
          "User-Agent": "distributed-llm",
          // The real size, uncompressed (as huggingface_hub asks for).
          "Accept-Encoding": "identity",
          ...init.headers,
        };
        if (token && new URL(at).origin === origin) headers.Authorization = `Bearer ${token}`;
        // The deadline covers the answer's headers only: a body takes as long as it flows
        // (the download's stall timer bounds its silences).
        const abort = new AbortController();
        const timer = setTimeout(() => abort.abort(), headersTimeoutMs);
        let res: Response;
        try {
          res = await doFetch(at, {
            method: init.method ?? "GET",
            headers,
            redirect: "manual",
            signal: abort.signal,
          });
        } catch (e) {
          throw new HubError(
            "unavailable",
            abort.signal.aborted
              ? `${hostOf(at)} sent no answer within ${headersTimeoutMs / 1000} s`
              : `cannot reach ${hostOf(at)}: ${connectionCause(e)}`,
          );
        } finally {
          clearTimeout(timer);
        }
        const location = res.headers.get("location");
        if (res.status >= 300 && res.status < 400 && location) {
          const next = new URL(location, at);
          if (init.stopAtCdn && next.origin !== origin) return res;
          await res.body?.cancel();
          at = next.href;
          continue;
        }
        return res;
      }
      throw new HubError("protocol", `more than 5 redirects from ${hostOf(url)}`);
    },
  };
}

/** A URL's host, for messages (never its query: a signed CDN URL carries credentials there). */
export function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return "the Hub";
  }
}

/** The gist of a fetch failure ("connection refused", "connection reset"). */
function connectionCause(e: unknown): string {
  const err = e as Error & { cause?: Error };
  const text = `${err?.message ?? e} ${err?.cause?.message ?? ""}`;
  const m = /(connection (?:refused|reset|closed)|dns error|timed out)/i.exec(text);
  const cause = m?.[1]?.toLowerCase();
  return (cause === "dns error" ? "DNS lookup failed" : cause ?? text.trim()).slice(0, 200);
}

/** What a request was for, to word its errors. */
export interface RequestContext {
  /** `owner/repo`. */
  repo: string;
  revision: string;
  /** The file, for a resolve request. */
  file?: string;
}

/**
 * The error for a non-2xx answer: `auth` (401/403, gated with the license link), `not_found`
 * (repository, revision, file), `unavailable` (5xx, 429: retryable) or `protocol`. Consumes
 * the body.
 */
export async function statusError(
  client: HubClient,
  res: Response,
  ctx: RequestContext,
): Promise<HubError> {
  await res.body?.cancel();
  const code = res.headers.get("x-error-code") ?? "";
  const page = `${client.endpoint}/${ctx.repo}`;
  const tokenHint = client.hasToken
    ? "HF_TOKEN was sent but does not grant access"
    : "HF_TOKEN is not set";
  if (code === "GatedRepo") {
    return new HubError(
      "auth",
      `${ctx.repo} is gated (HTTP ${res.status}; ${tokenHint}): accept the license at ${page} ` +
        `and set HF_TOKEN to a token of that account (${client.endpoint}/settings/tokens)`,
    );
  }
  if (res.status === 404 && code === "RevisionNotFound") {
    return new HubError("not_found", `revision "${ctx.revision}" not found in ${ctx.repo}`);
  }
  if (res.status === 404 && code === "EntryNotFound") {
    return new HubError(
      "not_found",
      `${ctx.file ?? "the file"} not found in ${ctx.repo}@${ctx.revision}`,
    );
  }
  if (code === "RepoNotFound" || res.status === 401) {
    return new HubError(
      res.status === 404 ? "not_found" : "auth",
      `repository ${ctx.repo} not found on ${client.endpoint} (HTTP ${res.status}; ${tokenHint}); ` +
        `check the name, or if it is private or gated, accept its terms at ${page} and set ` +
        `HF_TOKEN to a token with access`,
    );
  }
  if (res.status === 403) {
    return new HubError(
      "auth",
      `access to ${ctx.repo} denied (HTTP 403; ${tokenHint}): accept the license at ${page} and ` +
        `set HF_TOKEN to a token with read access`,
    );
  }
  if (res.status === 404) {
    return new HubError(
      "not_found",
      ctx.file
        ? `${ctx.file} not found in ${ctx.repo}@${ctx.revision}`
        : `${ctx.repo}@${ctx.revision} not found on ${client.endpoint}`,
    );
  }
  if (res.status === 429 || res.status >= 500) {
    const err = new HubError(
      "unavailable",
      `${hostOf(res.url || client.endpoint)} answered HTTP ${res.status}`,
    );
    const after = Number(res.headers.get("retry-after"));
    if (Number.isFinite(after) && after > 0) retryAfter.set(err, after * 1000);
    return err;
  }
  return new HubError(
    "protocol",
    `unexpected HTTP ${res.status} from ${hostOf(res.url || client.endpoint)}`,
  );
}

/** A Retry-After the server asked for, per error. */
const retryAfter = new WeakMap<HubError, number>();

/** Notified before each retry. */
export type RetryListener = (info: { attempt: number; delayMs: number; error: HubError }) => void;

/**
 * Run `fn` again after a backoff while it fails with `unavailable`, up to `client.retries` times
 * (doubling from `backoffMs`, capped at 30 s; a server's Retry-After up to 60 s). `fn` gets the
 * attempt number; it returns `progress: true` with its failure (by throwing a
 * {@linkcode ProgressError}) to start the count again, for a download that moved forward before
 * its connection dropped.
 */
export async function withRetries<T>(
  client: HubClient,
  fn: (attempt: number) => Promise<T>,
  onRetry?: RetryListener,
): Promise<T> {
  let failures = 0;
  for (let attempt = 0;; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      const progressed = e instanceof ProgressError;
      const err = progressed ? e.cause : e;
      if (!(err instanceof HubError) || err.kind !== "unavailable") throw err;
      failures = progressed ? 1 : failures + 1;
      if (failures > client.retries) {
        throw new HubError(
          "unavailable",
          `${err.message} (gave up after ${client.retries + 1} attempts)`,
        );
      }
      const backoff = Math.min(30_000, client.backoffMs * 2 ** (failures - 1));
      const delayMs = Math.max(backoff, Math.min(60_000, retryAfter.get(err) ?? 0));
      onRetry?.({ attempt: attempt + 1, delayMs, error: err });
      await new Promise((r) => setTimeout(r, delayMs));
    }
  }
}

/** A retryable failure after which the work had moved forward (resets the retry count). */
export class ProgressError extends Error {
  constructor(override readonly cause: HubError) {
    super(cause.message);
  }
}
