/**
 * One file from the Hub, resumable and verified. {@linkcode fileMetadata} asks the resolve URL
 * (`HEAD {endpoint}/{repo}/resolve/{revision}/{path}`) for what huggingface_hub's
 * `get_hf_file_metadata` reads: the commit (`X-Repo-Commit`), the content's sha256 for LFS files
 * (`X-Linked-Etag`, else `ETag`; quotes and `W/` stripped) and size (`X-Linked-Size`, else
 * `Content-Length`). {@linkcode downloadFile} then GETs the resolve URL of that commit, follows
 * its redirect to the CDN (without the token), and appends to `<file>.part` from where an
 * earlier attempt stopped (`Range: bytes=N-`; a server that answers 200 instead of 206 starts it
 * again). The part must begin with the GGUF magic, must not grow past the expected size, and its
 * sha256 is checked before the caller renames it into place; a mismatch deletes it.
 *
 * @example
 * ```ts
 * const meta = await fileMetadata(client, ref, "model-Q4_K_M.gguf");
 * await downloadFile(client, { url, partPath, size: meta.size!, sha256: meta.sha256 }, onBytes);
 * ```
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import { HubError } from "./errors.ts";
import {
  type HubClient,
  ProgressError,
  type RequestContext,
  type RetryListener,
  statusError,
  withRetries,
} from "./http.ts";
import type { HubReference } from "./reference.ts";

/** What the resolve URL's headers say about a file. */
export interface FileMetadata {
  /** The commit the revision points at (`X-Repo-Commit`), when the server names it. */
  commit?: string;
  /** sha256 of the content, when the etag is one (LFS files). */
  sha256?: string;
  /** Bytes, when the server says. */
  size?: number;
}

/** The resolve URL of a file: `{endpoint}/{repo}/resolve/{revision}/{path}`. */
export function resolveUrl(
  client: HubClient,
  ref: HubReference,
  revision: string,
  path: string,
): string {
  return `${client.endpoint}/${ref.repo}/resolve/${encodeURIComponent(revision)}/` +
    path.split("/").map(encodeURIComponent).join("/");
}

/** Strip an etag's weak marker and quotes (`W/"abc"` → `abc`), as huggingface_hub does. */
export function normalizeEtag(etag: string | null): string | undefined {
  if (!etag) return undefined;
  return etag.replace(/^W\//, "").replace(/^"|"$/g, "") || undefined;
}

/** HEAD the resolve URL: the commit, sha256 and size (see the module comment). */
export async function fileMetadata(
  client: HubClient,
  ref: HubReference,
  path: string,
  onRetry?: RetryListener,
): Promise<FileMetadata> {
  const url = resolveUrl(client, ref, ref.revision, path);
  return await withRetries(client, async () => {
    // HEAD stops at the Hub's own answer: its redirect to the CDN carries the X-Linked-* headers.
    const res = await client.request(url, { method: "HEAD", stopAtCdn: true });
    if (res.status >= 400) throw await statusError(client, res, { ...ref, file: path });
    await res.body?.cancel();
    const etag = normalizeEtag(res.headers.get("x-linked-etag") ?? res.headers.get("etag"));
    // A redirect's own Content-Length is its body's, not the file's.
    const length = res.status < 300 ? res.headers.get("content-length") : null;
    const size = Number(res.headers.get("x-linked-size") ?? length ?? NaN);
    const commit = res.headers.get("x-repo-commit") ?? undefined;
    return {
      commit: commit && /^[0-9a-f]{40}$/i.test(commit) ? commit.toLowerCase() : undefined,
      sha256: etag && /^[0-9a-f]{64}$/i.test(etag) ? etag.toLowerCase() : undefined,
      size: Number.isSafeInteger(size) && size >= 0 ? size : undefined,
    };
  }, onRetry);
}

/** A download's target. */
export interface DownloadTarget {
  /** The resolve URL (of the commit, so every attempt gets the same bytes). */
  url: string;
  /** Where the bytes go before verification. */
  partPath: string;
  /** Expected bytes. */
  size: number;
  /** Expected sha256 (hex); without one only the size is checked. */
  sha256?: string;
  /** For messages: the file's name in the repository. */
  name: string;
  /** The repository and revision, for error answers. */
  ctx: RequestContext;
}

/** Bytes so far, after each chunk written. */
export type BytesListener = (done: number, total: number) => void;

const GGUF_MAGIC = [0x47, 0x47, 0x55, 0x46]; // "GGUF"

/**
 * Fill `target.partPath` with the file, resuming what is there, and verify it. Retries dropped
 * connections, stalls and 5xx (see {@linkcode withRetries}; an attempt that moved forward resets
 * the count). Returns the sha256 of the bytes.
 */
export async function downloadFile(
  client: HubClient,
  target: DownloadTarget,
  onBytes?: BytesListener,
  onRetry?: RetryListener,
): Promise<string> {
  const digest = await withRetries(client, () => attempt(client, target, onBytes), onRetry);
  if (target.sha256 && digest !== target.sha256) {
    await Deno.remove(target.partPath).catch(() => {});
    throw new HubError(
      "integrity",
      `${target.name} was corrupted in transfer: its sha256 is ${digest}, the Hub lists ` +
        `${target.sha256}; the partial download was deleted, run the pull again`,
    );
  }
  return digest;
}

/** One GET from where the part ends; resolves with the whole part's sha256. */
async function attempt(
  client: HubClient,
  target: DownloadTarget,
  onBytes?: BytesListener,
): Promise<string> {
  const file = await Deno.open(target.partPath, { create: true, read: true, write: true })
    .catch((e) => {
      throw diskError(e, target);
    });
  try {
    let offset = (await file.stat()).size;
    if (offset > target.size) {
      await file.truncate(0);
      offset = 0;
    }
    const hash = createHash("sha256");
    if (offset > 0) await hashPrefix(file, offset, hash);
    if (offset === target.size) return hash.digest("hex");
    const res = await client.request(target.url, {
      headers: offset > 0 ? { Range: `bytes=${offset}-` } : {},
    });
    // The file's size as the server gives it (Content-Range's total, or a whole answer's length):
    // one other than the Hub lists can never verify. A Hub listing 100 bytes more than the file
    // had every attempt end short, then a resume refused, and it looped on whole downloads.
    const total = serverSize(res);
    if (total !== undefined && total !== target.size) {
      await res.body?.cancel();
      await file.truncate(0);
      throw new HubError(
        "integrity",
        `${target.name}: the server's file is ${total} bytes, the Hub lists ${target.size}`,
      );
    }
    if (res.status === 416) {
      // The part is not a prefix the server recognises: start again.
      await res.body?.cancel();
      await file.truncate(0);
      throw new HubError("unavailable", `${target.name}: the server refused to resume; restarting`);
    }
    if (res.status !== 200 && res.status !== 206) {
      throw await statusError(client, res, target.ctx);
    }
    if (res.status === 200 && offset > 0) {
      // The server sent the whole file: drop the part and take it from the start.
      await file.truncate(0);
      return await receive(client, file, res, 0, createHash("sha256"), target, onBytes);
    }
    if (res.status === 206) {
      const start = Number(/bytes\s+(\d+)-/.exec(res.headers.get("content-range") ?? "")?.[1]);
      if (start !== offset) {
        await res.body?.cancel();
        throw new HubError(
          "protocol",
          `${target.name}: asked for bytes from ${offset}, the server sent from ${start}`,
        );
      }
    }
    return await receive(client, file, res, offset, hash, target, onBytes);
  } finally {
    file.close();
  }
}

/** Append the body to the part, hashing it; a body that ends short is a dropped connection. */
async function receive(
  client: HubClient,
  file: Deno.FsFile,
  res: Response,
  offset: number,
  hash: Hash,
  target: DownloadTarget,
  onBytes?: BytesListener,
): Promise<string> {
  await file.seek(offset, Deno.SeekMode.Start);
  const start = offset;
  let done = offset;
  const reader = res.body!.getReader();
  let stalled = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stalled = true;
      reader.cancel().catch(() => {});
    }, client.stallTimeoutMs);
  };
  const dropped = (why: string) => {
    const err = new HubError(
      "unavailable",
      `${target.name}: ${why} after ${done} of ${target.size} bytes`,
    );
    return done > start ? new ProgressError(err) : err;
  };
  try {
    arm();
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw dropped(
          `the connection dropped (${String((e as Error)?.message ?? e).slice(0, 120)})`,
        );
      }
      if (chunk.done) break;
      const bytes = chunk.value;
      if (done < 4) checkMagic(bytes, done, target);
      if (done + bytes.length > target.size) {
        await reader.cancel().catch(() => {});
        await Deno.remove(target.partPath).catch(() => {});
        throw new HubError(
          "integrity",
          `${target.name}: the server sent more than the ${target.size} bytes the Hub lists; ` +
            `the partial download was deleted`,
        );
      }
      await writeAll(file, bytes, target);
      hash.update(bytes);
      done += bytes.length;
      onBytes?.(done, target.size);
      arm();
    }
  } finally {
    clearTimeout(timer);
  }
  if (stalled) throw dropped(`no bytes for ${client.stallTimeoutMs / 1000} s`);
  if (done < target.size) throw dropped("the connection closed");
  return hash.digest("hex");
}

/** Refuse a body that does not start with "GGUF" (an HTML error page, a safetensors file). */
function checkMagic(bytes: Uint8Array, at: number, target: DownloadTarget): void {
  for (let i = 0; i + at < 4 && i < bytes.length; i++) {
    if (bytes[i] !== GGUF_MAGIC[i + at]) {
      Deno.removeSync(target.partPath);
      throw new HubError(
        "unsupported",
        `${target.name} is not a GGUF file (it does not start with "GGUF"); the download was deleted`,
      );
    }
  }
}

async function writeAll(
  file: Deno.FsFile,
  bytes: Uint8Array,
  target: DownloadTarget,
): Promise<void> {
  let n = 0;
  while (n < bytes.length) {
    try {
      n += await file.write(bytes.subarray(n));
    } catch (e) {
      throw diskError(e, target);
    }
  }
}

async function hashPrefix(file: Deno.FsFile, length: number, hash: Hash): Promise<void> {
  await file.seek(0, Deno.SeekMode.Start);
  const buf = new Uint8Array(1 << 20);
  let left = length;
  while (left > 0) {
    const n = await file.read(buf.subarray(0, Math.min(buf.length, left)));
    if (n === null) break;
    hash.update(buf.subarray(0, n));
    left -= n;
  }
}

/** A cache write failure worded for the user: disk full, permissions. */
export function diskError(e: unknown, target: { partPath: string; size: number }): HubError {
  const code = (e as { code?: string })?.code ?? "";
  const msg = String((e as Error)?.message ?? e);
  if (code === "ENOSPC" || /no space left/i.test(msg)) {
    return new HubError(
      "disk",
      `disk full writing ${target.partPath} (the file needs ${target.size} bytes): free space, or ` +
        `point --cache-dir / DLLM_CACHE_DIR at a larger disk; the partial download is kept and resumes`,
    );
  }
  if (e instanceof Deno.errors.PermissionDenied || code === "EACCES" || code === "EROFS") {
    return new HubError(
      "disk",
      `cannot write ${target.partPath}: ${msg}; choose a writable --cache-dir / DLLM_CACHE_DIR`,
    );
  }
  if (e instanceof HubError) return e;
  return new HubError("disk", `cannot write ${target.partPath}: ${msg}`);
}

/**
 * The whole file's size by a GET's answer: a Content-Range's total (`a-b/N`,
 * or the total alone on a 416), or a whole (200) answer's Content-Length; undefined when it does
 * not say.
 */
function serverSize(res: Response): number | undefined {
  const range = /\/(\d+)\s*$/.exec(res.headers.get("content-range") ?? "");
  if (range) return Number(range[1]);
  // (An encoded answer's length is not the file's.)
  const encoding = res.headers.get("content-encoding");
  if (res.status === 200 && (encoding === null || encoding === "identity")) {
    const len = res.headers.get("content-length");
    if (len !== null && /^\d+$/.test(len.trim())) return Number(len);
  }
  return undefined;
}
