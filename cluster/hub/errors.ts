/**
 * The one error type of cluster/hub: a kind a caller can act on (exit code, retry) and a message
 * a user can act on. Messages never carry the token: nothing here reads a request's headers back.
 *
 * @example
 * ```ts
 * try {
 *   await pullModel("hf:owner/repo:Q4_K_M", opts);
 * } catch (e) {
 *   if (e instanceof HubError && e.kind === "usage") Deno.exit(2);
 * }
 * ```
 *
 * @module
 */

/**
 * What went wrong:
 * - `usage`: the reference is malformed (exit 2 in llmctl);
 * - `not_found`: repository, revision or file not on the Hub (close matches listed);
 * - `auth`: 401/403, a gated or private repository;
 * - `unavailable`: the Hub cannot be reached, or answered 5xx/429, after the retries;
 * - `integrity`: the bytes did not match the listing's size or sha256;
 * - `unsupported`: not a GGUF, or a sharded GGUF this loader cannot read;
 * - `disk`: the cache could not be written (disk full, permissions);
 * - `protocol`: the server answered something the Hub's protocol does not allow.
 */
export type HubErrorKind =
  | "usage"
  | "not_found"
  | "auth"
  | "unavailable"
  | "integrity"
  | "unsupported"
  | "disk"
  | "protocol";

/** An error of a Hub reference, listing or download. */
export class HubError extends Error {
  override name = "HubError";
  constructor(readonly kind: HubErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}
