/**
 * Where GGUF bytes come from: a file read by byte range, or memory.
 *
 * The reader only ever asks a source for ranges inside `[0, size)`; both sources below enforce it,
 * which is how the fuzz tests prove that no corrupt count can make the reader read or allocate
 * more than the file holds.
 */

/** Random access to the bytes of one GGUF file. */
export interface ByteSource {
  /** Total size in bytes. */
  readonly size: number;
  /** Exactly `length` bytes starting at `offset`; the range must lie inside `[0, size)`. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Fill `dst` with the bytes at `offset` (optional: sources that can read into a caller's
   * buffer let loaders stream big tensors through one small reused buffer).
   */
  readInto?(offset: number, dst: Uint8Array): Promise<void>;
  /** Total bytes handed out by `read` so far. */
  readonly bytesRead: number;
  /** Releases the underlying handle; later reads fail. */
  close(): void;
}

/** Throws when a caller asks for bytes outside the source: a reader bug, never a file problem. */
function checkRange(offset: number, length: number, size: number): void {
  if (
    !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
    offset + length > size
  ) {
    throw new RangeError(`read(${offset}, ${length}) outside a source of ${size} bytes`);
  }
}

/** A source over bytes already in memory (tests, fuzzing, downloaded buffers). */
export class MemorySource implements ByteSource {
  readonly size: number;
  bytesRead = 0;
  /** The largest single `read` request seen, so tests can assert no over-sized request. */
  maxRequest = 0;
  #bytes: Uint8Array;

  /** Wraps `bytes` without copying. */
  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.size = bytes.length;
  }

  /** A copy of the range, so callers may keep or mutate it. */
  read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(offset, length, this.size);
    this.bytesRead += length;
    if (length > this.maxRequest) this.maxRequest = length;
    return Promise.resolve(this.#bytes.slice(offset, offset + length));
  }

  /** Nothing to release. */
  close(): void {}
}

/** A source over a file on disk, read with seek + read so a 40 GB model is never fully loaded. */
export class FileSource implements ByteSource {
  readonly size: number;
  bytesRead = 0;
  #file: Deno.FsFile;
  // Reads seek a shared file position, so concurrent reads must take turns.
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(file: Deno.FsFile, size: number) {
    this.#file = file;
    this.size = size;
  }

  /** Opens `path` for reading. */
  static async open(path: string | URL): Promise<FileSource> {
    const file = await Deno.open(path, { read: true });
    try {
      const { size } = await file.stat();
      return new FileSource(file, size);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** Reads exactly the range; fails if the file shrank under us. */
  read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(offset, length, this.size);
    return this.#inTurn(async () => {
      const out = new Uint8Array(length);
      await this.#fill(offset, out);
      return out;
    });
  }

  /** Reads exactly `dst.length` bytes at `offset` into `dst`; fails if the file shrank under us. */
  readInto(offset: number, dst: Uint8Array): Promise<void> {
    checkRange(offset, dst.length, this.size);
    return this.#inTurn(() => this.#fill(offset, dst));
  }

  /** Run `op` after every earlier read (they share the file position). */
  #inTurn<T>(op: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(op);
    // then(), not catch(): a settled queue must not keep the last read's bytes alive.
    this.#queue = run.then(() => {}, () => {});
    return run;
  }

  async #fill(offset: number, out: Uint8Array): Promise<void> {
    const length = out.length;
    await this.#file.seek(offset, Deno.SeekMode.Start);
    let done = 0;
    while (done < length) {
      const n = await this.#file.read(out.subarray(done));
      if (n === null) {
        throw new Deno.errors.UnexpectedEof(
          `file ended at ${offset + done} while reading ${length} bytes at ${offset}`,
        );
      }
      done += n;
      this.bytesRead += n;
    }
  }

  /** Closes the file handle. */
  close(): void {
    try {
      this.#file.close();
    } catch {
      // Already closed: closing twice is harmless.
    }
  }
}
