/**
 * A repository's files and the choice of one: the Hub's tree API
 * (`GET /api/models/{repo}/tree/{revision}?recursive=true`, an array of `{type, path, size, oid,
 * lfs?: {oid, size, pointerSize}}`, more pages named by a `Link: <…>; rel="next"` header), and the
 * rules that turn a reference into one GGUF file: a path must exist and be a single-file GGUF; a
 * quant tag must match exactly one model file (mmproj/imatrix files are not models); a sharded
 * GGUF (`-00001-of-00003.gguf`) is refused, since model/gguf reads one file.
 *
 * @example
 * ```ts
 * const files = await listRepoFiles(client, ref);
 * const file = selectFile(files, ref); // { path: "gemma-3-1b-it-Q4_K_M.gguf", size, sha256 }
 * ```
 *
 * @module
 */
import { HubError } from "./errors.ts";
import { type HubClient, statusError, withRetries } from "./http.ts";
import type { HubReference } from "./reference.ts";

/** One file of a repository. */
export interface RepoFile {
  /** Path in the repository. */
  path: string;
  /** Bytes (the LFS object's size for LFS files). */
  size: number;
  /** The content's sha256 (hex), known for LFS files (`lfs.oid`). */
  sha256?: string;
}

/** Pages of a listing followed at most (a GGUF repository has tens of files, a page 1000). */
const MAX_PAGES = 50;

/** List every file of the reference's repository at its revision. */
export async function listRepoFiles(client: HubClient, ref: HubReference): Promise<RepoFile[]> {
  const files: RepoFile[] = [];
  let url: string | undefined = `${client.endpoint}/api/models/${ref.repo}/tree/` +
    `${encodeURIComponent(ref.revision)}?recursive=true`;
  for (let page = 0; url; page++) {
    if (page === MAX_PAGES) {
      throw new HubError("protocol", `${ref.repo}'s listing has more than ${MAX_PAGES} pages`);
    }
    const at: string = url;
    const { entries, next } = await withRetries(client, async () => {
      const res = await client.request(at, { headers: { Accept: "application/json" } });
      if (!res.ok) throw await statusError(client, res, ref);
      let body: unknown;
      try {
        body = await res.json();
      } catch (e) {
        throw new HubError(
          "protocol",
          `${ref.repo}'s file listing is not JSON: ${(e as Error).message}`,
        );
      }
      return { entries: body, next: nextLink(res.headers.get("link"), at) };
    });
    if (!Array.isArray(entries)) {
      throw new HubError("protocol", `${ref.repo}'s file listing is not an array`);
    }
    for (const e of entries) {
      // A path that could leave the cache's directory (as llama.cpp's is_valid_subpath refuses).
      if (e?.type !== "file" || typeof e.path !== "string" || !isSafeRepoPath(e.path)) continue;
      const lfs = e.lfs && typeof e.lfs === "object" ? e.lfs : undefined;
      const size = Number(lfs?.size ?? e.size);
      const oid = typeof lfs?.oid === "string" ? lfs.oid.toLowerCase() : undefined;
      files.push({
        path: e.path,
        size: Number.isSafeInteger(size) && size >= 0 ? size : 0,
        sha256: oid && /^[0-9a-f]{64}$/.test(oid) ? oid : undefined,
      });
    }
    url = next;
  }
  return files;
}

/** Whether a listed path stays inside its directory: relative, no `.`/`..`/empty segments. */
export function isSafeRepoPath(path: string): boolean {
  return path.length > 0 && path.length <= 1024 && !/[\\\0]/.test(path) &&
    path.split("/").every((s) => s !== "" && s !== "." && s !== "..");
}

/** The `rel="next"` URL of a Link header (GitHub's pagination format, which the Hub uses). */
export function nextLink(link: string | null, base: string): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(",")) {
    const m = /<([^>]*)>\s*;(.*)/.exec(part.trim());
    if (m && /\brel\s*=\s*"?next"?/.test(m[2])) return new URL(m[1], base).href;
  }
  return undefined;
}

/** A sharded GGUF's part (`model-Q4_K_M-00001-of-00003.gguf`). */
export interface ShardInfo {
  /** The name without `-0000i-of-0000n.gguf`. */
  prefix: string;
  index: number;
  count: number;
}

/** Whether `path` is one part of a split GGUF (llama.cpp's `gguf-split` naming). */
export function shardInfo(path: string): ShardInfo | undefined {
  const m = /^(.+)-(\d{5})-of-(\d{5})\.gguf$/i.exec(path);
  return m ? { prefix: m[1], index: Number(m[2]), count: Number(m[3]) } : undefined;
}

/** The quant tag a GGUF's name ends with (`Q4_K_M` of `gemma-3-1b-it-Q4_K_M.gguf`), as llama.cpp reads it. */
export function quantOf(path: string): string | undefined {
  const base = (shardInfo(path)?.prefix ?? path.replace(/\.gguf$/i, "")).split("/").pop()!;
  return /[-.]([A-Za-z0-9_]+)$/.exec(base)?.[1]?.toUpperCase();
}

/** Whether a path is a GGUF model (not a projector, importance matrix or draft head file). */
export function isModelGguf(path: string): boolean {
  if (!/\.gguf$/i.test(path)) return false;
  const name = path.split("/").pop()!.toLowerCase();
  return !["mmproj", "imatrix", "mtp-", "eagle3-", "dflash-"].some((w) => name.includes(w));
}

/** Choose the file a reference names among `files`; throws a {@linkcode HubError} that lists what exists. */
export function selectFile(files: RepoFile[], ref: HubReference): RepoFile {
  const where = `${ref.repo}@${ref.revision}`;
  const models = files.filter((f) => isModelGguf(f.path));
  if (ref.file) {
    const f = files.find((x) => x.path === ref.file);
    if (!f) {
      throw new HubError(
        "not_found",
        `${ref.file} not found in ${where}${
          listing(closeMatches(ref.file, files), "close matches")
        }`,
      );
    }
    if (!/\.gguf$/i.test(f.path)) {
      throw new HubError(
        "unsupported",
        `${f.path} is not a GGUF file; name a .gguf file${
          listing(models.map((m) => m.path), "in the repository")
        }`,
      );
    }
    return refuseShard(f, files, where);
  }
  // One candidate per model: a split model counts once (by its first part).
  const candidates = models.filter((f) => (shardInfo(f.path)?.index ?? 1) === 1);
  const available = () =>
    listing(
      candidates.map((c) => `${c.path}${quantOf(c.path) ? ` (${quantOf(c.path)})` : ""}`),
      "available",
    );
  if (candidates.length === 0) {
    throw new HubError(
      "not_found",
      `${where} has no GGUF model file${
        listing(files.map((f) => f.path).slice(0, 20), "it holds")
      }`,
    );
  }
  if (!ref.quant) {
    if (candidates.length === 1) return refuseShard(candidates[0], files, where);
    throw new HubError(
      "usage",
      `${where} has ${candidates.length} GGUF models; name one with :QUANT or its path${available()}`,
    );
  }
  const tag = ref.quant.toLowerCase();
  const escaped = tag.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  // The tag as a whole word of the name first (Q4_K does not pick Q4_K_M), then anywhere in it.
  const word = new RegExp(`(^|[^a-z0-9])${escaped}([^a-z0-9_]|$)`);
  const name = (f: RepoFile) => (shardInfo(f.path)?.prefix ?? f.path).toLowerCase() + ".gguf";
  let matches = candidates.filter((f) => word.test(name(f)));
  if (matches.length === 0) matches = candidates.filter((f) => name(f).includes(tag));
  if (matches.length === 0) {
    throw new HubError(
      "not_found",
      `no GGUF in ${where} has "${ref.quant}" in its name${available()}`,
    );
  }
  if (matches.length > 1) {
    throw new HubError(
      "usage",
      `"${ref.quant}" matches ${matches.length} GGUF files in ${where}; give a longer tag or the ` +
        `file's path${listing(matches.map((m) => m.path), "matches")}`,
    );
  }
  return refuseShard(matches[0], files, where);
}

function refuseShard(f: RepoFile, files: RepoFile[], where: string): RepoFile {
  const s = shardInfo(f.path);
  if (!s) return f;
  const alternatives = files.filter((x) => isModelGguf(x.path) && !shardInfo(x.path)).map((x) =>
    x.path
  );
  throw new HubError(
    "unsupported",
    `${f.path} in ${where} is one part of a GGUF split into ${s.count} files; this loader reads ` +
      `single-file GGUFs only: pick a single-file quant, or download the parts and merge them with ` +
      `llama.cpp's \`llama-gguf-split --merge ${s.prefix}-00001-of-${
        String(s.count).padStart(5, "0")
      }.gguf merged.gguf\` ` +
      `and give merged.gguf's path${listing(alternatives, "single-file GGUFs here")}`,
  );
}

/** Up to 8 paths closest to `wanted`: same extension and the most shared name pieces first. */
export function closeMatches(wanted: string, files: RepoFile[]): string[] {
  const pieces = (s: string) => new Set(s.toLowerCase().split(/[^a-z0-9]+/).filter(Boolean));
  const want = pieces(wanted);
  return files
    .map((f) => ({ path: f.path, score: [...pieces(f.path)].filter((p) => want.has(p)).length }))
    .filter((x) => x.score > 0 || /\.gguf$/i.test(x.path))
    .sort((a, b) => b.score - a.score || a.path.localeCompare(b.path))
    .slice(0, 8)
    .map((x) => x.path);
}

function listing(items: string[], label: string): string {
  return items.length ? `; ${label}: ${items.join(", ")}` : "";
}
