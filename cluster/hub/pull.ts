/**
 * `hf:` reference → a verified local GGUF path: list the repository (listing.ts), choose the file,
 * ask its resolve URL for the commit, sha256 and size (download.ts), and return the cached copy
 * of that commit when there is one (cache.ts); otherwise take the file's lock, download into
 * `.part` with resume and retries, verify, and rename it into place. When the Hub cannot be
 * reached (or `HF_HUB_OFFLINE=1`, as for huggingface_hub), a file this cache already holds for
 * the revision is used without it; a reference pinned to a commit hash that is cached never
 * touches the network.
 *
 * @example
 * ```ts
 * const { path } = await pullModel("hf:ggml-org/gemma-3-1b-it-GGUF:Q4_K_M", {
 *   cacheDir: defaultCacheDir(Deno.env.toObject()),
 *   env: Deno.env.toObject(),
 *   onEvent: (e) => console.error(e),
 * });
 * ```
 *
 * @module
 */
import { dirname } from "node:path";
import { HubCache, PART_SUFFIX } from "./cache.ts";
import { downloadFile, fileMetadata, resolveUrl } from "./download.ts";
import { HubError } from "./errors.ts";
import { hubClient, type HubClientOptions } from "./http.ts";
import { listRepoFiles, selectFile } from "./listing.ts";
import {
  formatHubReference,
  type HubReference,
  isCommitHash,
  isHubReference,
  parseHubReference,
} from "./reference.ts";

/** What a pull reports as it goes (progress views and agent logs). */
export type PullEvent =
  | { event: "resolved"; ref: string; file: string; commit: string; size: number; cached: boolean }
  | { event: "progress"; file: string; bytes_done: number; bytes_total: number }
  | { event: "retry"; file: string; attempt: number; delay_ms: number; error: string }
  | { event: "offline"; ref: string; reason: string };

/** Options of a pull. */
export interface PullOptions extends HubClientOptions {
  /** The model cache root (`--cache-dir`); files go under `<cacheDir>/hub/`. */
  cacheDir: string;
  /** Progress and notes. */
  onEvent?: (e: PullEvent) => void;
}

/** A pulled file. */
export interface PullResult {
  /** The verified local file. */
  path: string;
  /** The reference as written back (`hf:owner/repo:Q4_K_M`). */
  ref: string;
  repo: string;
  /** Its path in the repository. */
  file: string;
  revision: string;
  /** The commit it came from (the revision, where the server named none). */
  commit: string;
  size: number;
  /** sha256 the download was checked against; absent for a file found in the cache offline. */
  sha256?: string;
  /** Whether the cache already held it (nothing was downloaded). */
  cached: boolean;
  /** Whether the Hub was not asked (offline, unreachable, or a cached commit). */
  offline: boolean;
}

/** Pull the file a reference names; see the module comment. */
export async function pullModel(
  reference: string | HubReference,
  opts: PullOptions,
): Promise<PullResult> {
  const ref = typeof reference === "string" ? parseHubReference(reference) : reference;
  const text = formatHubReference(ref);
  const cache = new HubCache(opts.cacheDir);
  const env = opts.env ?? {};
  const fromCache = async (reason?: string): Promise<PullResult | undefined> => {
    const hit = await cache.lookup(ref);
    if (!hit) return undefined;
    if (reason) opts.onEvent?.({ event: "offline", ref: text, reason });
    return {
      path: hit.path,
      ref: text,
      repo: ref.repo,
      file: hit.file.path,
      revision: ref.revision,
      commit: hit.commit,
      size: hit.file.size,
      cached: true,
      offline: true,
    };
  };
  const offlineMode = /^(1|true|yes|on)$/i.test(env.HF_HUB_OFFLINE ?? "");
  if (offlineMode || isCommitHash(ref.revision)) {
    const hit = await fromCache(offlineMode ? "HF_HUB_OFFLINE is set" : undefined);
    if (hit) return hit;
    if (offlineMode) {
      throw new HubError(
        "not_found",
        `HF_HUB_OFFLINE is set and ${text} is not in the cache at ${cache.root}; unset it to download`,
      );
    }
  }
  // With a copy here already, a Hub that does not answer at once is not waited for (as
  // huggingface_hub's metadata request does not retry): the copy is used instead.
  const cachedCopy = await cache.lookup(ref);
  const client = hubClient(opts);
  const asking = cachedCopy ? hubClient({ ...opts, retries: 0 }) : client;
  let meta;
  let file;
  try {
    file = selectFile(await listRepoFiles(asking, ref), ref);
    meta = await fileMetadata(asking, ref, file.path, (r) =>
      opts.onEvent?.({
        event: "retry",
        file: file!.path,
        attempt: r.attempt,
        delay_ms: r.delayMs,
        error: r.error.message,
      }));
  } catch (e) {
    // The Hub out of reach is no reason to refuse a file already here; any answer it gave is.
    if (e instanceof HubError && e.kind === "unavailable") {
      const hit = await fromCache(`the Hub is unreachable (${e.message})`);
      if (hit) return hit;
      throw new HubError(
        "unavailable",
        `${e.message}; ${text} is not in the cache at ${cache.root} either`,
      );
    }
    throw e;
  }
  const commit = meta.commit ?? ref.revision;
  // The resolve answer speaks for the commit downloaded; the listing (of a branch a moment
  // earlier) is the fallback.
  const size = meta.size ?? file.size;
  const sha256 = meta.sha256 ?? file.sha256;
  const finalPath = cache.filePath(ref, commit, file.path);
  const result = (cached: boolean): PullResult => ({
    path: finalPath,
    ref: text,
    repo: ref.repo,
    file: file.path,
    revision: ref.revision,
    commit,
    size,
    sha256,
    cached,
    offline: false,
  });
  if (await cache.sizeOf(finalPath) === size) {
    await cache.recordCommit(ref, commit);
    opts.onEvent?.({ event: "resolved", ref: text, file: file.path, commit, size, cached: true });
    return result(true);
  }
  opts.onEvent?.({ event: "resolved", ref: text, file: file.path, commit, size, cached: false });
  const release = await cache.lock(finalPath);
  try {
    // Another pull may have finished it while this one waited for the lock.
    if (await cache.sizeOf(finalPath) === size) {
      await cache.recordCommit(ref, commit);
      return result(true);
    }
    const partPath = finalPath + PART_SUFFIX;
    await downloadFile(
      client,
      {
        url: resolveUrl(client, ref, commit, file.path),
        partPath,
        size,
        sha256,
        name: file.path,
        ctx: { repo: ref.repo, revision: ref.revision, file: file.path },
      },
      (done, total) =>
        opts.onEvent?.({
          event: "progress",
          file: file.path,
          bytes_done: done,
          bytes_total: total,
        }),
      (r) =>
        opts.onEvent?.({
          event: "retry",
          file: file.path,
          attempt: r.attempt,
          delay_ms: r.delayMs,
          error: r.error.message,
        }),
    );
    await Deno.mkdir(dirname(finalPath), { recursive: true });
    await Deno.rename(partPath, finalPath);
    await cache.recordCommit(ref, commit);
  } finally {
    release();
  }
  return result(false);
}

/**
 * A model argument as a local path: plain paths as given, `hf:` references pulled (see
 * {@linkcode pullModel}).
 */
export async function resolveModelPath(model: string, opts: PullOptions): Promise<string> {
  return isHubReference(model) ? (await pullModel(model, opts)).path : model;
}
