/**
 * The content-addressed model cache: `<cacheDir>/<sha256 of the file>/` holds `manifest.bin`
 * (the source's signed GetManifest answer), one file per fetched segment (`seg-<i>.bin`: the
 * header or one tensor's exact bytes) and `progress.log`, an append-only record of verified
 * chunks ("c <segment> <chunk>") and of segments whose whole sha256 matched ("d <segment>"), so
 * an interrupted transfer resumes from the last verified chunk. Bytes found changed when read
 * (a torn write before a power cut, bit rot, a deleted file) are recorded as such ("x <segment>
 * [<chunk>]") and fetched again by the next fetch. A directory whose `manifest.bin` cuts the file
 * otherwise than the manifest it is opened with (another chunk size, other ranges or hashes under
 * the same sha256) is deleted and started clean: its bytes were verified against the other one.
 *
 * {@linkcode CacheSource} (cache_source.ts) is a `ByteSource` over the cache: `readGGUF` parses the cached header
 * and `LlamaStage.load` reads tensors through it unchanged. Every tensor read re-hashes the
 * segment against the manifest, so unverified bytes are never loaded.
 *
 * @example
 * ```ts
 * const cache = await ModelCache.open("/tmp/cache", manifest, rawAnswer);
 * if (cache.verifyChunk(0, 0, bytes)) await cache.writeChunk(0, 0, bytes);
 * const file = await readGGUF(cache.source());
 * ```
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { homedir } from "node:os";
import type { TransferManifest } from "../../proto/mod.ts";
import { CacheSource } from "./cache_source.ts";
import {
  chunkCount,
  openManifest,
  readManifestAnswer,
  sameBytes,
  sameSegments,
  sha256,
} from "./manifest.ts";

/** `DLLM_CACHE_DIR`, else `~/.cache/distributed-llm`. */
export function defaultCacheDir(env: Record<string, string | undefined> = {}): string {
  return env.DLLM_CACHE_DIR || join(homedir(), ".cache", "distributed-llm");
}

/** One model's directory in the cache. */
export class ModelCache {
  /** Verified chunks per segment. */
  readonly #chunks = new Map<number, Set<number>>();
  /** Segments whose whole sha256 matched. */
  readonly #done = new Set<number>();
  /**
   * Chunks of each unfinished segment this process checked against the manifest's chunk digests
   * as it wrote them (writeChunk): a segment whose every chunk is here is what the manifest says
   * without hashing it again. Hashing each chunk twice (its own digest, then a running segment
   * digest) was a tenth of a fetcher's CPU time, and reading a segment back to hash it a third.
   */
  readonly #verifiedHere = new Map<number, Set<number>>();
  /**
   * Segments finished from chunks this process verified as it wrote them: loads read them
   * without hashing again (that cost a standby ~1 s per 1.5 GB of a recovery); segments found
   * on disk are still re-hashed.
   */
  readonly #trusted = new Set<number>();
  /** Fetches filling this cache now (fetchStarted / fetchEnded). */
  #fetches = 0;
  /** Reads waiting for chunks a fetch has not brought yet; each re-checks when woken. */
  readonly #waiting = new Set<() => void>();
  /** Why the last fetch ended without the chunks (fails the reads that waited for them). */
  #fetchError?: Error;
  #log?: Deno.FsFile;
  /** Set by open when the directory held another segment table's cache, now deleted. */
  discarded = false;

  private constructor(readonly dir: string, readonly manifest: TransferManifest) {}

  /** Open (creating) the directory of `manifest` under `root`, reading its progress log. */
  static async open(
    root: string,
    manifest: TransferManifest,
    rawAnswer?: Uint8Array,
  ): Promise<ModelCache> {
    if (!/^[0-9a-f]{64}$/.test(manifest.sha256)) {
      throw new Error(`manifest sha256 "${manifest.sha256}" is not a sha256`);
    }
    const dir = join(root, manifest.sha256);
    // Bytes verified against another segment table under this sha256 (a forged Prepare: the
    // sha256 names the directory but no fetcher can check it) are not this manifest's: a
    // genuine deploy adopted them without fetching. Start clean instead.
    const stale = await storedManifestDiffers(dir, manifest);
    if (stale) await Deno.remove(dir, { recursive: true });
    await Deno.mkdir(dir, { recursive: true });
    if (rawAnswer) await Deno.writeFile(join(dir, "manifest.bin"), rawAnswer);
    const c = new ModelCache(dir, manifest);
    c.discarded = stale;
    let text = "";
    try {
      text = await Deno.readTextFile(join(dir, "progress.log"));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    for (const line of text.split("\n")) {
      const [kind, a, b] = line.split(" ");
      const seg = Number(a);
      if (!(seg >= 0 && seg < manifest.segments.length)) continue;
      if (kind === "c" && Number(b) >= 0) c.#set(seg).add(Number(b));
      if (kind === "d") c.#done.add(seg);
      if (kind === "x") {
        // Found changed on disk since it was recorded: fetched again.
        c.#done.delete(seg);
        if (b === undefined) c.#chunks.delete(seg);
        else c.#chunks.get(seg)?.delete(Number(b));
      }
    }
    // A "d" whose chunks are not all recorded is from a torn log: trust chunks, re-check later.
    for (const seg of [...c.#done]) if (c.missingChunks(seg).length) c.#done.delete(seg);
    c.#log = await Deno.open(join(dir, "progress.log"), {
      write: true,
      append: true,
      create: true,
    });
    return c;
  }

  /** Delete a model's cache directory; returns the bytes freed. */
  static async purge(root: string, sha: string): Promise<number> {
    const dir = join(root, sha);
    let bytes = 0;
    try {
      for await (const e of Deno.readDir(dir)) {
        if (e.isFile) bytes += (await Deno.stat(join(dir, e.name))).size;
      }
      await Deno.remove(dir, { recursive: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return bytes;
  }

  #set(seg: number): Set<number> {
    let s = this.#chunks.get(seg);
    if (!s) this.#chunks.set(seg, s = new Set());
    return s;
  }

  /** Byte length of chunk `chunk` of segment `seg`. */
  chunkLength(seg: number, chunk: number): number {
    const len = Number(this.manifest.segments[seg].length);
    return Math.max(0, Math.min(this.manifest.chunkSize, len - chunk * this.manifest.chunkSize));
  }

  /** Whether a chunk is verified and stored. */
  has(seg: number, chunk: number): boolean {
    return this.#chunks.get(seg)?.has(chunk) ?? false;
  }

  /** Whether a whole segment is stored and its sha256 matched. */
  segmentDone(seg: number): boolean {
    return this.#done.has(seg);
  }

  /** Chunks of `seg` not yet verified. */
  missingChunks(seg: number): number[] {
    const n = chunkCount(Number(this.manifest.segments[seg].length), this.manifest.chunkSize);
    const have = this.#chunks.get(seg);
    const out: number[] = [];
    for (let i = 0; i < n; i++) if (!have?.has(i)) out.push(i);
    return out;
  }

  /** Whether `data` is chunk `chunk` of segment `seg` according to the manifest. */
  verifyChunk(seg: number, chunk: number, data: Uint8Array): boolean {
    const want = this.manifest.segments[seg]?.chunkSha256[chunk];
    return want !== undefined && data.length === this.chunkLength(seg, chunk) &&
      sameBytes(sha256(data), want);
  }

  /**
   * Check a chunk against the manifest's digest and store it, then record it in the progress
   * log. Returns false, storing nothing, when it does not match.
   */
  async writeChunk(seg: number, chunk: number, data: Uint8Array): Promise<boolean> {
    if (!this.verifyChunk(seg, chunk, data)) return false;
    const f = await Deno.open(this.#path(seg), { write: true, create: true });
    try {
      await f.seek(chunk * this.manifest.chunkSize, Deno.SeekMode.Start);
      let done = 0;
      while (done < data.length) done += await f.write(data.subarray(done));
    } finally {
      f.close();
    }
    let here = this.#verifiedHere.get(seg);
    if (!here) this.#verifiedHere.set(seg, here = new Set());
    here.add(chunk);
    this.#set(seg).add(chunk);
    await this.#append(`c ${seg} ${chunk}\n`);
    this.#wake();
    return true;
  }

  /**
   * A fetch starts filling this cache: until {@link fetchEnded}, readVerifiedInto waits for
   * chunks it does not hold yet instead of failing, so a stage can load while its layers arrive.
   */
  fetchStarted(): void {
    this.#fetches++;
    this.#fetchError = undefined;
  }

  /** Whether a fetch is filling this cache now. */
  get filling(): boolean {
    return this.#fetches > 0;
  }

  /** A fetch ended (`error` when it failed): reads still waiting for chunks fail. */
  fetchEnded(error?: Error): void {
    this.#fetches = Math.max(0, this.#fetches - 1);
    if (error) this.#fetchError = error;
    this.#wake();
  }

  #wake(): void {
    for (const w of [...this.#waiting]) w();
  }

  /**
   * Whether bytes [at, end) of `seg` can be read as they are: the segment is done, or every
   * chunk they touch was verified by this process as it was written.
   */
  #readable(seg: number, at: number, end: number): boolean {
    return this.#done.has(seg) || this.#covers(this.#verifiedHere.get(seg), at, end);
  }

  /** Whether `chunks` holds every chunk that bytes [at, end) of a segment touch. */
  #covers(chunks: Set<number> | undefined, at: number, end: number): boolean {
    if (!chunks) return false;
    const size = this.manifest.chunkSize;
    for (let c = Math.floor(at / size); c * size < end; c++) if (!chunks.has(c)) return false;
    return true;
  }

  /**
   * Whether bytes [at, end) of `seg` are stored: readable, or every chunk they touch recorded
   * (those are checked against their digests as they are read). A segment with one chunk found
   * changed is no longer done, but its other chunks still read.
   */
  #present(seg: number, at: number, end: number): boolean {
    return this.#readable(seg, at, end) || this.#covers(this.#chunks.get(seg), at, end);
  }

  /** Wait until bytes [at, end) of `seg` are stored; false when no fetch can bring them. */
  async #arrival(seg: number, at: number, end: number): Promise<boolean> {
    while (!this.#present(seg, at, end)) {
      if (this.#fetches === 0) return false;
      await new Promise<void>((resolve) => {
        const w = () => {
          this.#waiting.delete(w);
          resolve();
        };
        this.#waiting.add(w);
      });
    }
    return true;
  }

  /**
   * Once every chunk of `seg` is stored: record it done when this process verified each chunk
   * as it wrote it; otherwise (a resumed fetch: chunks found on disk) check the whole segment's
   * sha256 read back from disk, and on a mismatch forget its chunks (they will be fetched
   * again). Returns whether the segment is done.
   */
  async finishSegment(seg: number): Promise<boolean> {
    if (this.#done.has(seg)) return true;
    if (this.missingChunks(seg).length) return false;
    const n = chunkCount(Number(this.manifest.segments[seg].length), this.manifest.chunkSize);
    const here = this.#verifiedHere.get(seg);
    this.#verifiedHere.delete(seg);
    const checked = here?.size === n;
    const digest = checked ? undefined : await this.#hashSegment(seg);
    if (checked || (digest && sameBytes(digest, this.manifest.segments[seg].sha256))) {
      this.#done.add(seg);
      if (checked) this.#trusted.add(seg);
      this.#wake();
      await this.#append(`d ${seg}\n`);
      return true;
    }
    this.#chunks.delete(seg);
    await Deno.remove(this.#path(seg)).catch(() => {});
    return false;
  }

  /**
   * Read a chunk into `into` (its length) and re-check it against the manifest; false when the
   * cache does not hold it or it no longer verifies.
   */
  async readChunk(seg: number, chunk: number, into: Uint8Array): Promise<boolean> {
    if (!this.has(seg, chunk)) return false;
    const len = this.chunkLength(seg, chunk);
    if (into.length !== len) {
      throw new RangeError(`chunk ${chunk} of segment ${seg} is ${len} bytes, not ${into.length}`);
    }
    // Only a missing file, a short read or a digest mismatch says the bytes are gone: any other
    // failure to open (too many open files, a permission) is passing, and throws as it is.
    const f = await Deno.open(this.#path(seg), { read: true }).catch((e) => {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    });
    let ok = false;
    try {
      ok = f !== undefined && await readAt(f, chunk * this.manifest.chunkSize, into) &&
        this.verifyChunk(seg, chunk, into);
    } finally {
      f?.close();
    }
    if (!ok) await this.#invalidate(seg, chunk);
    return ok;
  }

  /**
   * Forget bytes of `seg` (one chunk, or all of it) found not to match the manifest when read
   * back, and record that in the log: the segment is no longer done, and the next fetch (the
   * next stage load's ensure) takes them again. Before, a segment recorded done stayed done, and
   * every load of it failed until the cache was purged by hand.
   */
  async #invalidate(seg: number, chunk?: number): Promise<void> {
    this.#done.delete(seg);
    this.#trusted.delete(seg);
    if (chunk === undefined) {
      this.#chunks.delete(seg);
      this.#verifiedHere.delete(seg);
    } else {
      this.#chunks.get(seg)?.delete(chunk);
      this.#verifiedHere.get(seg)?.delete(chunk);
    }
    await this.#append(chunk === undefined ? `x ${seg}\n` : `x ${seg} ${chunk}\n`);
  }

  /** A whole segment's bytes, only when its sha256 matches the manifest now. */
  async readVerifiedSegment(seg: number): Promise<Uint8Array> {
    const done = this.#done.has(seg);
    const bytes = done ? await this.#readSegment(seg) : undefined;
    if (!bytes || !sameBytes(sha256(bytes), this.manifest.segments[seg].sha256)) {
      if (done) await this.#invalidate(seg);
      throw new Error(
        `cache ${this.dir}: ${this.manifest.segments[seg].name} is not (or no longer) verified; ` +
          `it must be fetched again`,
      );
    }
    return bytes;
  }

  /**
   * Fill `dst` with segment `seg`'s bytes from `at`: each chunk the range touches is read from
   * disk and checked against its sha256 in the manifest first (the segment must be done; one
   * this process wrote and hashed is trusted, see #trusted), so a loader streams a tensor
   * through its own buffer. Whole segments read and hashed per tensor
   * (then sliced: two copies) made loading an 8B model's stage allocate twice its largest tensor
   * (295 MB) at a time and the agent's RSS run 50% over its weights.
   */
  async readVerifiedInto(seg: number, at: number, dst: Uint8Array): Promise<void> {
    const name = this.manifest.segments[seg]?.name;
    const size = this.manifest.chunkSize;
    const end = at + dst.length;
    const inside = at >= 0 && end <= Number(this.manifest.segments[seg]?.length ?? -1);
    if (!inside || !(await this.#arrival(seg, at, end))) {
      throw new Error(
        `cache ${this.dir}: ${name} is not (or no longer) verified; it must be fetched again` +
          (inside && this.#fetchError ? ` (the fetch failed: ${this.#fetchError.message})` : ""),
      );
    }
    // Chunks this process verified as it wrote them are read as they are, the segment being
    // finished or not (a stage loading while its layers arrive).
    const trusted = this.#trusted.has(seg) ||
      (!this.#done.has(seg) && this.#readable(seg, at, end));
    const f = await Deno.open(this.#path(seg), { read: true }).catch(async (e) => {
      // As in readChunk: only a missing file is bytes lost; other failures pass.
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      await this.#invalidate(seg);
      throw new Error(
        `cache ${this.dir}: ${name} cannot be read (${e.message}); it must be ` +
          `fetched again`,
      );
    });
    try {
      if (trusted) {
        if (await readAt(f, at, dst)) return;
        await this.#invalidate(seg);
        throw new Error(`cache ${this.dir}: ${name} is shorter than verified`);
      }
      let chunk: Uint8Array | undefined;
      for (let c = Math.floor(at / size); c * size < end; c++) {
        const len = this.chunkLength(seg, c);
        // A whole chunk inside the range is read straight into dst; edge chunks go through a
        // buffer (the whole chunk is needed to check it).
        const inside = c * size >= at && c * size + len <= end;
        const buf = inside
          ? dst.subarray(c * size - at, c * size - at + len)
          : (chunk ??= new Uint8Array(size)).subarray(0, len);
        // A short read leaves stale bytes that fail the check below.
        await readAt(f, c * size, buf);
        if (!this.verifyChunk(seg, c, buf)) {
          await this.#invalidate(seg, c);
          throw new Error(
            `cache ${this.dir}: chunk ${c} of ${name} is not (or no longer) verified: it ` +
              `changed on disk; it must be fetched again`,
          );
        }
        if (inside) continue;
        const from = Math.max(at, c * size);
        const to = Math.min(end, c * size + len);
        dst.set(buf.subarray(from - c * size, to - c * size), from - at);
      }
    } finally {
      f.close();
    }
  }

  /** Verified bytes stored for this model. */
  get cachedBytes(): number {
    let n = 0;
    for (const [seg, chunks] of this.#chunks) {
      for (const c of chunks) n += this.chunkLength(seg, c);
    }
    return n;
  }

  /** Segments that are stored and verified. */
  doneSegments(): number[] {
    return [...this.#done].sort((a, b) => a - b);
  }

  /** Segments with at least one verified chunk (servable in part). */
  partialSegments(): number[] {
    return [...this.#chunks.keys()].filter((s) => this.#chunks.get(s)!.size > 0);
  }

  /** A ByteSource over the verified cache for `readGGUF` / `LlamaStage.load`. */
  async source(): Promise<CacheSource> {
    return new CacheSource(this, await this.readVerifiedSegment(0));
  }

  /** Close the progress log. */
  close(): void {
    try {
      this.#log?.close();
    } catch { /* closed */ }
    this.#log = undefined;
  }

  #path(seg: number): string {
    return join(this.dir, `seg-${seg}.bin`);
  }

  /**
   * sha256 of a stored segment read in 4 MiB pieces, or undefined when the file is short: the
   * whole segment in one buffer (295 MB for an 8B model's output matrix) was an allocation
   * spike of every fetch that stayed in the agent's RSS (issue 17).
   */
  async #hashSegment(seg: number): Promise<Uint8Array | undefined> {
    const len = Number(this.manifest.segments[seg].length);
    let f: Deno.FsFile;
    try {
      f = await Deno.open(this.#path(seg), { read: true });
    } catch (e) {
      // As #readSegment: a passing failure must not discard intact bytes.
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
    try {
      const h = createHash("sha256");
      const buf = new Uint8Array(Math.min(len, 4 << 20));
      for (let at = 0; at < len;) {
        const piece = buf.subarray(0, Math.min(buf.length, len - at));
        if (!(await readAt(f, at, piece))) return undefined;
        h.update(piece);
        at += piece.length;
      }
      return new Uint8Array(h.digest());
    } finally {
      f.close();
    }
  }

  async #readSegment(seg: number): Promise<Uint8Array | undefined> {
    try {
      const b = await Deno.readFile(this.#path(seg));
      const len = Number(this.manifest.segments[seg].length);
      return b.length >= len ? b.subarray(0, len) : undefined;
    } catch (e) {
      // Missing is gone; any other failure (too many open files, a permission) is passing.
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  }

  async #append(line: string): Promise<void> {
    if (!this.#log) return;
    const data = new TextEncoder().encode(line);
    let done = 0;
    while (done < data.length) done += await this.#log.write(data.subarray(done));
  }
}

/**
 * Whether `dir/manifest.bin` describes other segments than `manifest` (or cannot be read as a
 * manifest: nothing vouches for the bytes beside it then); false when there is none.
 */
async function storedManifestDiffers(dir: string, manifest: TransferManifest): Promise<boolean> {
  try {
    const answer = await readManifestAnswer(join(dir, "manifest.bin"));
    return !sameSegments(openManifest(answer, undefined).manifest, manifest);
  } catch (e) {
    return !(e instanceof Deno.errors.NotFound);
  }
}

/** Fill `dst` from byte `offset` of `f`; false when the file ends first. */
async function readAt(f: Deno.FsFile, offset: number, dst: Uint8Array): Promise<boolean> {
  await f.seek(offset, Deno.SeekMode.Start);
  for (let done = 0; done < dst.length;) {
    const n = await f.read(dst.subarray(done));
    if (n === null) return false;
    done += n;
  }
  return true;
}
