/**
 * The gRPC wire's pieces that every stream path shares (HTTP/2 and the TCP data plane): a
 * message in its 5-byte envelope, a reader splitting a byte stream into envelopes' bodies, and
 * the bounded queue of messages read and not yet taken by a handler.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** One message in a gRPC envelope: `flags` (0: an uncompressed message), length, body. */
export function grpcEnvelope(body: Uint8Array, flags = 0): Uint8Array {
  const out = new Uint8Array(5 + body.byteLength);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, body.byteLength);
  out.set(body, 5);
  return out;
}

/**
 * Splits a byte stream into the bodies of gRPC envelopes. Each body is a fresh copy (chunks may
 * be views of buffers the socket reuses).
 */
export class EnvelopeReader {
  /** Copies of the chunks of the unfinished message (the socket may reuse their buffers). */
  #parts: Uint8Array[] = [];
  #held = 0;
  /** Bytes the unfinished message needs, envelope included (0: its header is not here yet). */
  #need = 0;

  constructor(private readonly maxBytes: number) {}

  /** Take a chunk; returns the whole messages it completed. Throws ConnectError on bad input. */
  push(chunk: Uint8Array): Uint8Array[] {
    this.#held += chunk.byteLength;
    // Joined only once a message is whole: a big frame arrives in many small chunks, and
    // joining at every chunk copied it over and over (quadratic in its size).
    if (this.#held < Math.max(this.#need, 5)) {
      this.#parts.push(chunk.slice());
      return [];
    }
    let buf = chunk;
    if (this.#parts.length) {
      buf = new Uint8Array(this.#held);
      let o = 0;
      for (const p of this.#parts) {
        buf.set(p, o);
        o += p.byteLength;
      }
      buf.set(chunk, o);
    }
    const out: Uint8Array[] = [];
    let at = 0;
    let need = 0;
    while (buf.byteLength - at >= 5) {
      const flags = buf[at];
      const n = new DataView(buf.buffer, buf.byteOffset + at + 1, 4).getUint32(0);
      if (flags & 1) {
        throw new ConnectError("compressed message on an uncompressed stream", Code.Internal);
      }
      if (n > this.maxBytes) {
        throw new ConnectError(
          `message of ${n} bytes exceeds the limit of ${this.maxBytes}`,
          Code.ResourceExhausted,
        );
      }
      if (buf.byteLength - at - 5 < n) {
        need = 5 + n;
        break;
      }
      out.push(buf.slice(at + 5, at + 5 + n));
      at += 5 + n;
    }
    this.#parts = at === buf.byteLength ? [] : [buf.slice(at)];
    this.#held = buf.byteLength - at;
    this.#need = need;
    return out;
  }

  /** Bytes of an unfinished message held (a stream that ends with some was cut). */
  get pending(): number {
    return this.#held;
  }
}

/**
 * Messages of one bidirectional stream read from the socket and not yet taken by its handler;
 * beyond, reading pauses. A Forward stream has at most a prompt's chunks in flight (32).
 */
export const MAX_QUEUED_MESSAGES = 64;

/**
 * Bytes of messages of one stream read and not yet taken, beyond which reading pauses too (one
 * message of any allowed size still passes when nothing else waits): 64 queued 256 MiB frames
 * would otherwise be 16 GiB. 16 MiB holds four 128-row prompt chunks of a 8192-wide model.
 */
export const MAX_QUEUED_BYTES = 16 << 20;

/**
 * A push-driven async iterable; `fail` makes the consumer's next read throw. Reads waiting at
 * once are answered in the order they were made (a link with several frames in flight reads
 * their answers that way).
 */
export class MessageQueue<T> implements AsyncIterable<T> {
  #items: T[] = [];
  /** The byte size push was given for each queued item. */
  #sizes: number[] = [];
  #bytes = 0;
  #waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }[] = [];
  #done = false;
  #error: unknown;

  /** Queue an item (`bytes`: its size, counted by {@linkcode bytes} until it is read). */
  push(item: T, bytes = 0): void {
    if (this.#done) return;
    const w = this.#waiting.shift();
    if (w) {
      w.resolve({ value: item, done: false });
    } else {
      this.#items.push(item);
      this.#sizes.push(bytes);
      this.#bytes += bytes;
    }
  }

  /** Items queued and not yet read. */
  get size(): number {
    return this.#items.length;
  }

  /** Bytes of the items queued and not yet read (as push was told). */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Who waits for room (see {@linkcode room}), and the limits they wait under: the last caller's
   * (a stream's queue has one producer, its socket reader, which always passes the same ones).
   */
  #room: { limit: number; maxBytes: number; waiters: (() => void)[] } = {
    limit: Infinity,
    maxBytes: Infinity,
    waiters: [],
  };

  #hasRoom(limit: number, maxBytes: number): boolean {
    return this.#items.length === 0 ||
      (this.#items.length < limit && this.#bytes < maxBytes);
  }

  #freeRoom(): void {
    for (const w of this.#room.waiters.splice(0)) w();
  }

  /**
   * Resolves once fewer than `limit` items and `maxBytes` bytes wait to be read (at once if so
   * already, when the queue is empty, or when it ends): a producer reading from a socket pauses
   * there, so a peer that sends faster than the consumer reads is held back by TCP instead of by
   * this process's memory.
   */
  room(limit: number, maxBytes = Infinity): Promise<void> {
    if (this.#done || this.#hasRoom(limit, maxBytes)) return Promise.resolve();
    this.#room.limit = limit;
    this.#room.maxBytes = maxBytes;
    return new Promise((resolve) => this.#room.waiters.push(resolve));
  }

  /** No more items; a reader waiting gets `done`. */
  end(): void {
    this.#settle();
  }

  /** No more items; the next read throws `error` (items queued before it are read first). */
  fail(error: unknown): void {
    if (this.#done) return;
    this.#error = error;
    this.#settle();
  }

  #settle(): void {
    if (this.#done) return;
    this.#done = true;
    this.#freeRoom();
    for (const w of this.#waiting.splice(0)) {
      if (this.#error !== undefined) w.reject(this.#error);
      else w.resolve({ value: undefined, done: true });
    }
  }

  /** The next item, or done; throws what `fail` was given. */
  next(): Promise<IteratorResult<T>> {
    if (this.#items.length > 0) {
      const value = this.#items.shift()!;
      this.#bytes -= this.#sizes.shift()!;
      if (this.#hasRoom(this.#room.limit, this.#room.maxBytes)) this.#freeRoom();
      return Promise.resolve({ value, done: false });
    }
    if (this.#done) {
      return this.#error !== undefined
        ? Promise.reject(this.#error)
        : Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    // Connect drives request streams with next/return/throw, as it would a generator.
    const finish = (): Promise<IteratorResult<T>> => {
      this.end();
      return Promise.resolve({ value: undefined, done: true });
    };
    return { next: () => this.next(), return: finish, throw: finish };
  }
}
