/**
 * A `ByteSource` over a model's cache (cache.ts): `readGGUF` parses the cached header and
 * `LlamaStage.load` reads tensors through it, every read verified against the manifest.
 *
 * @module
 */
import type { TransferManifest } from "../../proto/mod.ts";
import type { ByteSource } from "../../model/gguf/mod.ts";

/** What a CacheSource reads through (ModelCache). */
export interface VerifiedSegments {
  readonly manifest: TransferManifest;
  /** A whole segment's bytes, only when its sha256 matches the manifest now. */
  readVerifiedSegment(seg: number): Promise<Uint8Array>;
  /** Fill `dst` with segment `seg`'s bytes from `at`, each chunk checked as it is read. */
  readVerifiedInto(seg: number, at: number, dst: Uint8Array): Promise<void>;
}

/**
 * A `ByteSource` over a model cache. While the header is parsed (`parsing`), reads past the
 * header are padded with zeros (the reader reads ahead; it never interprets those bytes). After
 * that a read must lie inside one verified tensor segment, re-hashed on every read.
 */
export class CacheSource implements ByteSource {
  /** The file's size (as the manifest says). */
  readonly size: number;
  /** Bytes handed out so far. */
  bytesRead = 0;
  /** True until the header has been parsed; see the class comment. */
  parsing = true;

  /** @param cache the model's cache @param header the verified header bytes */
  constructor(readonly cache: VerifiedSegments, private readonly header: Uint8Array) {
    this.size = Number(cache.manifest.fileSize);
  }

  /** Exactly the requested bytes, verified; throws when they are not in the cache. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new RangeError(`read(${offset}, ${length}) outside a source of ${this.size} bytes`);
    }
    this.bytesRead += length;
    if (offset + length <= this.header.length) return this.header.slice(offset, offset + length);
    if (this.parsing && offset < this.header.length) {
      const out = new Uint8Array(length);
      out.set(this.header.subarray(offset));
      return out;
    }
    const segs = this.cache.manifest.segments;
    for (let i = 1; i < segs.length; i++) {
      const start = Number(segs[i].offset);
      const end = start + Number(segs[i].length);
      if (offset >= start && offset + length <= end) {
        const bytes = await this.cache.readVerifiedSegment(i);
        return bytes.slice(offset - start, offset - start + length);
      }
    }
    throw new Error(
      `bytes [${offset}, ${offset + length}) of ${this.cache.manifest.modelId} are not in the ` +
        `cache; fetch the layers first`,
    );
  }

  /**
   * Fill `dst` with the bytes at `offset`, verified chunk by chunk (no whole-segment copy); the
   * range must lie in the header or inside one stored segment.
   */
  async readInto(offset: number, dst: Uint8Array): Promise<void> {
    const length = dst.length;
    if (offset < 0 || offset + length > this.size) {
      throw new RangeError(`read(${offset}, ${length}) outside a source of ${this.size} bytes`);
    }
    if (offset + length <= this.header.length || this.parsing) {
      dst.set(await this.read(offset, length));
      return;
    }
    this.bytesRead += length;
    const segs = this.cache.manifest.segments;
    for (let i = 1; i < segs.length; i++) {
      const start = Number(segs[i].offset);
      if (offset >= start && offset + length <= start + Number(segs[i].length)) {
        return await this.cache.readVerifiedInto(i, offset - start, dst);
      }
    }
    throw new Error(
      `bytes [${offset}, ${offset + length}) of ${this.cache.manifest.modelId} are not in the ` +
        `cache; fetch the layers first`,
    );
  }

  /** Nothing to release (the cache stays open). */
  close(): void {}
}
