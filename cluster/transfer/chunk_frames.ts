/**
 * FetchChunksResponse messages built in place: each buffer of a stream's pool keeps room for the
 * gRPC envelope and the protobuf fields ahead of the chunk, so a chunk read from disk into the
 * buffer is sent as it lies — no per-chunk serialization, envelope or copy.
 *
 * Why: a source serving three fetchers through Connect allocated two fresh 1 MiB buffers per
 * chunk (the serialized message and its envelope), and its RSS rose 425 MB above idle while it
 * served the 8B model's layers (`deno task bench transfer`); the freed buffers waited for V8 and
 * then sat in glibc's arenas.
 *
 * The bytes are exactly what `toBinary` and a gRPC envelope would give (fields equal to zero
 * are left out, as proto3 writes them), so any gRPC client reads them.
 *
 * @example
 * ```ts
 * const frames = new ChunkFrames(1 << 20);
 * const data = frames.data(0).subarray(0, n); // read the chunk into it
 * res.write(frames.frame(0, segment, chunk, n));
 * ```
 * @module
 */

/** Bytes kept ahead of the data: envelope (5) + three tags with 5-byte varints (18). */
export const CHUNK_HEADROOM = 32;

/** A small pool of buffers, each one chunk with room for its message header in front. */
export class ChunkFrames {
  readonly #buffers: Uint8Array[];

  /** `count` buffers for chunks of up to `chunkSize` bytes. */
  constructor(readonly chunkSize: number, count = 2) {
    if (!Number.isInteger(chunkSize) || chunkSize <= 0 || chunkSize > 0xffff_ffff - 64) {
      throw new RangeError(`chunk size ${chunkSize} cannot be framed`);
    }
    this.#buffers = Array.from({ length: count }, () => new Uint8Array(CHUNK_HEADROOM + chunkSize));
  }

  /** Where buffer `i` (of the pool, modulo its size) takes a chunk's bytes. */
  data(i: number): Uint8Array {
    return this.#buffers[i % this.#buffers.length].subarray(CHUNK_HEADROOM);
  }

  /**
   * The enveloped FetchChunksResponse for the `length` bytes in {@link data}(i): a view of the
   * buffer, valid until that buffer takes another chunk.
   */
  frame(i: number, segment: number, chunk: number, length: number): Uint8Array {
    if (length > this.chunkSize) {
      throw new RangeError(`a chunk of ${length} bytes does not fit ${this.chunkSize}`);
    }
    const buf = this.#buffers[i % this.#buffers.length];
    const head: number[] = [];
    if (segment) head.push(0x08, ...varint(segment)); // field 1, varint
    if (chunk) head.push(0x10, ...varint(chunk)); // field 2, varint
    if (length) head.push(0x1a, ...varint(length)); // field 3, length-delimited
    const body = head.length + length;
    const start = CHUNK_HEADROOM - head.length - 5;
    buf[start] = 0; // not compressed
    new DataView(buf.buffer, buf.byteOffset).setUint32(start + 1, body);
    buf.set(head, start + 5);
    return buf.subarray(start, CHUNK_HEADROOM + length);
  }
}

/** The protobuf varint of a uint32. */
function varint(n: number): number[] {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff_ffff) {
    throw new RangeError(`${n} is not a uint32`);
  }
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}
