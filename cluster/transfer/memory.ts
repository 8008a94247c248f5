/**
 * Bounded buffering and memory hand-back for model transfers.
 *
 * {@linkcode readAhead} yields reads in order with at most `depth` more in flight, so a source
 * reads the next chunk while the current one travels, and a slow peer (HTTP/2 flow control)
 * makes it hold `depth + 1` chunks, never a batch or a segment.
 *
 * {@linkcode releaseFreedMemory} gives freed heap back to the OS. A fetch or a serve burst
 * allocates and frees megabyte buffers at a high rate (HTTP/2 frames, message assembly, protobuf,
 * file reads). glibc keeps what was freed in its arenas: after the first 1 MiB buffer is freed
 * its dynamic mmap threshold rises above 1 MiB, so later ones come from the heap and fragment it.
 * After fetching 585 MB an agent's JS heap held 11 MB and no live buffers, yet its RSS stayed
 * 100 MB above where it started; `malloc_trim(0)` took it back to within 35 MB.
 * {@linkcode collectGarbage} comes first: dropped chunk buffers are only freed when V8 collects,
 * and an idle agent may not collect for a long time. {@linkcode MemoryReleaser} runs both once
 * transfers have been quiet for a second.
 *
 * @example
 * ```ts
 * for await (const data of readAhead([0, 1, 2], (i) => source.read(i * size, size))) send(data);
 * releaseFreedMemory();
 * ```
 *
 * @module
 */
import * as v8 from "node:v8";
import * as vm from "node:vm";

/**
 * Yield `read(item, i)` for each item in order, with up to `depth` later reads running while the
 * consumer holds the current value: `depth + 1` values exist at a time, so `read` may fill
 * buffer `i % (depth + 1)` (a value is dropped before read `i + depth + 1` starts). A read that
 * fails is thrown when its turn comes; reads left running when the consumer stops early are
 * awaited by nobody and their errors are dropped.
 */
export async function* readAhead<T, R>(
  items: Iterable<T>,
  read: (item: T, index: number) => Promise<R>,
  depth = 1,
): AsyncGenerator<R> {
  const it = items[Symbol.iterator]();
  const pending: Promise<R>[] = [];
  let started = 0;
  const start = () => {
    const next = it.next();
    if (next.done) return;
    const p = read(next.value, started++);
    // Handled when awaited in turn; this keeps an abandoned read from crashing the process.
    p.catch(() => {});
    pending.push(p);
  };
  for (let i = 0; i <= depth; i++) start();
  while (pending.length) {
    yield await pending.shift()!;
    // The consumer is done with that value: its buffer may be filled again.
    start();
  }
}

let gc: (() => void) | null | undefined;

/**
 * Run a full V8 garbage collection now. The buffers a transfer drops are ArrayBuffers whose
 * memory lives outside the JS heap; V8 frees them only when it collects, and once traffic stops
 * it may not collect for a long time, so a trim alone finds them still allocated. Returns
 * whether it ran (`--expose-gc` is set at run time). Not for use during a transfer: collecting
 * every 32-64 MiB served bounded the source's peak RSS 50-70 MB lower but cost it 40-80% more
 * CPU time.
 */
export function collectGarbage(): boolean {
  if (gc === undefined) {
    gc = null;
    try {
      v8.setFlagsFromString("--expose-gc");
      gc = vm.runInNewContext("gc") as typeof gc;
    } catch {
      // Not available in this runtime: V8 collects on its own schedule.
    }
  }
  if (!gc) return false;
  gc();
  return true;
}

/**
 * Free a received chunk's memory now instead of at V8's next collection. Each message a client
 * decodes lives in an ArrayBuffer of its own (the envelope), which nothing holds once the chunk
 * is written; detaching it (`transfer(0)`) releases the bytes at once, where dropping it left
 * them to a collection that external-memory pressure only starts past ~64 MB: a standby
 * fetching 1.24 GB carried 80–90 MB of such buffers above its weights. A view into a larger
 * buffer (a file read whole, a pool, a message with other fields) is left alone.
 */
export function discardReceived(data: Uint8Array): void {
  const buf = data.buffer;
  if (buf instanceof ArrayBuffer && !buf.detached && buf.byteLength - data.byteLength <= 64) {
    try {
      buf.transfer(0);
    } catch {
      // A buffer its owner made non-detachable: V8 collects it as before.
    }
  }
}

type Trim = (pad: bigint) => number;
let trim: Trim | null | undefined;

/**
 * Return heap memory glibc holds freed to the OS (`malloc_trim(0)`). Needs Linux with glibc and
 * the FFI permission (agents run with --allow-all); elsewhere it does nothing and says so.
 * Returns whether it ran.
 */
export function releaseFreedMemory(): boolean {
  if (trim === undefined) {
    trim = null;
    try {
      if (
        Deno.build.os === "linux" && Deno.permissions.querySync({ name: "ffi" }).state === "granted"
      ) {
        const lib = Deno.dlopen("libc.so.6", {
          malloc_trim: { parameters: ["usize"], result: "i32" },
        });
        trim = (pad) => lib.symbols.malloc_trim(pad);
      }
    } catch {
      // Not glibc (musl has no malloc_trim) or no libc.so.6: nothing to hand back this way.
    }
  }
  if (!trim) return false;
  trim(0n);
  return true;
}

/**
 * Hands back what transfers leave behind: once they have been quiet for `quietMs` (`busy()`
 * when one starts, `idle()` when it ends), a collection frees the dropped buffers and
 * {@linkcode releaseFreedMemory} returns the freed memory to the OS. (Trimming during a transfer
 * as well cost the source 50% more CPU time: the pages handed back fault in again at once.)
 */
export class MemoryReleaser {
  #active = 0;
  #timer?: ReturnType<typeof setTimeout>;

  /**
   * A releaser that collects and trims once nothing has run for `quietMs`.
   * @param quietMs idle time before the collection and trim
   */
  constructor(private readonly quietMs = 1000) {}

  /** A transfer started. */
  busy(): void {
    this.#active++;
    clearTimeout(this.#timer);
  }

  /** A transfer ended. */
  idle(): void {
    if (--this.#active > 0) return;
    this.#active = 0;
    clearTimeout(this.#timer);
    const timer = setTimeout(() => {
      collectGarbage();
      releaseFreedMemory();
    }, this.quietMs);
    // Never keeps a process alive that has nothing else to do.
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  /** Cancel a pending collection and trim. */
  close(): void {
    clearTimeout(this.#timer);
  }
}
