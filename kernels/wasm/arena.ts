/**
 * An arena: one shared `WebAssembly.Memory` (at most 4 GiB — wasm32) with the kernels
 * instantiated over it and a first-fit allocator for the host.
 *
 * The backend keeps activations, KV caches and small weights in arena 0 and spreads the large
 * weights over as many arenas as their bytes need (a new arena opens when a weight does not fit
 * the cap of the existing ones). A matmul runs in its weight's arena; its activations are copied
 * there when that is not arena 0.
 */
import { adviseHugePages, populate } from "./hugepages.ts";
import { instantiate, type Kernels } from "./kernels.ts";

const PAGE = 65536;
const ALIGN = 64;

/** One memory, its kernels and allocator. */
export class Arena {
  readonly memory: WebAssembly.Memory;
  readonly k: Kernels;
  readonly cap: number;
  #base: number;
  #top: number;
  #free: { off: number; size: number }[] = [];
  #u8!: Uint8Array;
  #f32!: Float32Array;
  #i32!: Int32Array;

  constructor(readonly index: number, module: WebAssembly.Module, capBytes: number) {
    const maxPages = Math.max(2, Math.min(65536, Math.floor(capBytes / PAGE)));
    this.cap = maxPages * PAGE;
    this.memory = new WebAssembly.Memory({ initial: 1, maximum: maxPages, shared: true });
    adviseHugePages(this.memory, this.cap);
    this.k = instantiate(module, this.memory);
    this.#base = Math.ceil(Math.max(this.k.heapBase(), 1024) / ALIGN) * ALIGN;
    this.#top = this.#base;
    this.#refresh();
  }

  #refresh(): void {
    const buf = this.memory.buffer;
    this.#u8 = new Uint8Array(buf);
    this.#f32 = new Float32Array(buf);
    this.#i32 = new Int32Array(buf);
  }

  /** Byte view of the whole memory (refreshed after growth). */
  get u8(): Uint8Array {
    if (this.#u8.length !== this.memory.buffer.byteLength) this.#refresh();
    return this.#u8;
  }
  /** Float32 view of the whole memory. */
  get f32(): Float32Array {
    if (this.#f32.length * 4 !== this.memory.buffer.byteLength) this.#refresh();
    return this.#f32;
  }
  /** Int32 view of the whole memory. */
  get i32(): Int32Array {
    if (this.#i32.length * 4 !== this.memory.buffer.byteLength) this.#refresh();
    return this.#i32;
  }

  /** Bytes still allocatable (free list + untouched tail). */
  get available(): number {
    return this.cap - this.#top + this.#free.reduce((s, f) => s + f.size, 0);
  }

  /** Bytes allocated so far (high-water mark of the bump pointer). */
  get used(): number {
    return this.#top;
  }

  /** Allocate `bytes` (64-byte aligned); undefined when the arena's cap would be exceeded. */
  alloc(bytes: number): number | undefined {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    for (let i = 0; i < this.#free.length; i++) {
      const f = this.#free[i];
      if (f.size >= size) {
        const off = f.off;
        if (f.size === size) this.#free.splice(i, 1);
        else {
          f.off += size;
          f.size -= size;
        }
        return off;
      }
    }
    if (this.#top + size > this.cap) return undefined;
    const off = this.#top;
    // Grow first, and move the bump pointer only once the memory holds it: a grow the OS
    // refuses (its commit, e.g. under vm.overcommit_memory=2) is "no room", not a lost block.
    const need = off + size - this.memory.buffer.byteLength;
    if (need > 0) {
      try {
        this.memory.grow(Math.ceil(need / PAGE));
      } catch {
        return undefined;
      }
    }
    this.#top = off + size;
    return off;
  }

  /**
   * Grow the memory so `bytes` more fit past the bump pointer (within the cap) and fault the new
   * pages in on another thread; resolves to whether any were. Allocations then land in pages
   * that already exist.
   */
  prefault(bytes: number): Promise<boolean> {
    const have = this.memory.buffer.byteLength;
    const want = Math.min(this.cap, this.#top + bytes);
    if (want <= have) return Promise.resolve(false);
    this.memory.grow(Math.ceil((want - have) / PAGE));
    return populate(this.memory, have, this.memory.buffer.byteLength - have);
  }

  /** Return a block from {@link alloc} (same `bytes`). */
  release(off: number, bytes: number): void {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    const list = this.#free;
    let i = 0;
    while (i < list.length && list[i].off < off) i++;
    list.splice(i, 0, { off, size });
    // merge neighbours
    if (i + 1 < list.length && list[i].off + list[i].size === list[i + 1].off) {
      list[i].size += list[i + 1].size;
      list.splice(i + 1, 1);
    }
    if (i > 0 && list[i - 1].off + list[i - 1].size === list[i].off) {
      list[i - 1].size += list[i].size;
      list.splice(i, 1);
      i--;
    }
    // give the tail back to the bump pointer
    const last = list[list.length - 1];
    if (last && last.off + last.size === this.#top) {
      this.#top = last.off;
      list.pop();
    }
  }
}
