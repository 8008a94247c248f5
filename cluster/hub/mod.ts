/**
 * Models from the Hugging Face Hub: `hf:` references (reference.ts), the repository's file
 * listing and the choice of one GGUF (listing.ts), the resumable, verified download
 * (download.ts), the cache under `<cacheDir>/hub/` (cache.ts), the HTTP client with its bounds
 * and error wording (http.ts), and the pull that composes them (pull.ts).
 *
 * @example
 * ```ts
 * import { pullModel } from "./cluster/hub/mod.ts";
 * const { path } = await pullModel("hf:owner/repo:Q4_K_M", { cacheDir, env: Deno.env.toObject() });
 * ```
 *
 * @module
 */
export { HubError, type HubErrorKind } from "./errors.ts";
export {
  DEFAULT_REVISION,
  formatHubReference,
  HUB_PREFIX,
  HUB_REFERENCE_FORMS,
  type HubReference,
  isHubReference,
  parseHubReference,
} from "./reference.ts";
export { DEFAULT_ENDPOINT, hubClient, type HubClientOptions } from "./http.ts";
export { isModelGguf, quantOf, type RepoFile, selectFile, shardInfo } from "./listing.ts";
export { HubCache } from "./cache.ts";
export {
  type PullEvent,
  pullModel,
  type PullOptions,
  type PullResult,
  resolveModelPath,
} from "./pull.ts";
