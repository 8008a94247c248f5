/**
 * Where pulled files live: `<cacheDir>/hub/<owner>/<repo>/<commit>/<path>` (the commit the Hub
 * named in `X-Repo-Commit`; a mirror that names none gets the revision, percent-encoded), with
 * `refs/<revision>` recording which commit a branch or tag pointed at when last pulled, so a
 * reference resolves without the network. A file appears at its path only by an atomic rename
 * after its size and sha256 were checked; `<path>.part` holds a download in progress and
 * `<path>.lock` (an exclusive flock, released by the kernel when its process dies) keeps two
 * pulls of one file from writing the same part.
 *
 * @example
 * ```ts
 * const cache = new HubCache("/home/me/.cache/distributed-llm");
 * cache.filePath(ref, commit, "model-Q4_K_M.gguf"); // …/hub/owner/repo/<commit>/model-Q4_K_M.gguf
 * ```
 *
 * @module
 */
import { dirname, join } from "node:path";
import { HubError } from "./errors.ts";
import { isModelGguf, type RepoFile, selectFile } from "./listing.ts";
import { type HubReference, isCommitHash } from "./reference.ts";

/** Suffix of a download in progress. */
export const PART_SUFFIX = ".part";
/** Suffix of the lock file beside it. */
export const LOCK_SUFFIX = ".lock";

/** The Hub's part of the model cache. */
export class HubCache {
  /** `<cacheDir>/hub`. */
  readonly root: string;

  constructor(cacheDir: string) {
    this.root = join(cacheDir, "hub");
  }

  /** `<root>/<owner>/<repo>`. */
  repoDir(ref: HubReference): string {
    return join(this.root, ref.owner, ref.name);
  }

  /** The directory of one commit (or, without one, of the encoded revision). */
  snapshotDir(ref: HubReference, commit: string): string {
    return join(this.repoDir(ref), isCommitHash(commit) ? commit : encodeURIComponent(commit));
  }

  /** A file's final path. */
  filePath(ref: HubReference, commit: string, path: string): string {
    return join(this.snapshotDir(ref, commit), ...path.split("/"));
  }

  /** The commit `revision` pointed at when last pulled (a commit hash is its own). */
  async commitOf(ref: HubReference): Promise<string | undefined> {
    if (isCommitHash(ref.revision)) return ref.revision;
    try {
      const text = (await Deno.readTextFile(this.#refPath(ref))).trim();
      return text || undefined;
    } catch {
      return undefined;
    }
  }

  /** Record the commit a revision points at (written whole or not at all). */
  async recordCommit(ref: HubReference, commit: string): Promise<void> {
    if (isCommitHash(ref.revision)) return;
    const path = this.#refPath(ref);
    await Deno.mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.${crypto.randomUUID()}.tmp`;
    await Deno.writeTextFile(tmp, commit + "\n");
    await Deno.rename(tmp, path);
  }

  #refPath(ref: HubReference): string {
    return join(this.repoDir(ref), "refs", encodeURIComponent(ref.revision));
  }

  /** A complete file's size, or undefined when it is not there. */
  async sizeOf(path: string): Promise<number | undefined> {
    try {
      const st = await Deno.stat(path);
      return st.isFile ? st.size : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * The cached file a reference names, found without the network: its revision's recorded
   * commit, then the file by path, or by the same quant rules as online over the files of that
   * commit's directory. Undefined when it is not cached.
   */
  async lookup(
    ref: HubReference,
  ): Promise<{ path: string; file: RepoFile; commit: string } | undefined> {
    const commit = await this.commitOf(ref);
    if (!commit) return undefined;
    const dir = this.snapshotDir(ref, commit);
    const files: RepoFile[] = [];
    await walk(dir, "", files);
    let file: RepoFile;
    try {
      file = selectFile(files, ref);
    } catch (e) {
      if (e instanceof HubError && e.kind !== "unsupported") return undefined;
      throw e;
    }
    return { path: this.filePath(ref, commit, file.path), file, commit };
  }

  /**
   * Hold the lock of one file's download: waits while another process (or another pull in this
   * one) holds it. Release with the returned function.
   */
  async lock(finalPath: string): Promise<() => void> {
    await Deno.mkdir(dirname(finalPath), { recursive: true });
    const f = await Deno.open(finalPath + LOCK_SUFFIX, { create: true, write: true });
    try {
      await f.lock(true);
    } catch (e) {
      f.close();
      throw e;
    }
    return () => {
      try {
        f.unlockSync();
      } finally {
        f.close();
      }
    };
  }
}

/** Every complete model file under `dir` (parts and locks are not files of the repository). */
async function walk(dir: string, prefix: string, out: RepoFile[]): Promise<void> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch {
    return;
  }
  for (const e of entries) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory) await walk(join(dir, e.name), rel, out);
    else if (e.isFile && isModelGguf(rel)) {
      out.push({ path: rel, size: (await Deno.stat(join(dir, e.name))).size });
    }
  }
}
