/**
 * What the WASM backend hands out and where it lives: buffers, weights and KV caches (handles
 * into the arenas), per-arena scratch, and {@link Memories}, which places them.
 *
 * Arena 0 holds every activation buffer, KV cache and a float copy of each 1-D weight (norms,
 * biases); 2-D weights are copied once into the first arena with room (arena 0 first, keeping a
 * reserve for activations), new arenas opening as needed, so a layer range larger than wasm32's
 * 4 GiB still loads.
 */
import {
  BackendMemoryError,
  type Buf,
  type KVCache,
  type KVType,
  type Weight,
} from "../backend.ts";
import { needElements } from "../checks.ts";
import { dequantizeRow } from "../quant/ops.ts";
import type { GGMLType } from "../quant/types.ts";
import { Arena } from "./arena.ts";
import type { Kernels } from "./kernels.ts";
import type { Pool } from "./pool.ts";

let nextId = 1;

/** A float buffer in arena 0; `version` counts writes (keys the activation-conversion cache). */
export class WBuf implements Buf {
  readonly id = nextId++;
  version = 0;
  freed = false;
  constructor(readonly length: number, readonly off: number) {}
}

/** A weight matrix (or a row view of one) in some arena, in the layout the kernels read. */
export class WWeight implements Weight {
  /** Block bytes when the first `repackedRows` rows are interleaved by 4 (see repack4), else 0. */
  bb = 0;
  repackedRows = 0;
  /** Those groups laid out as byte quads (repackQuads) rather than whole blocks (repack4). */
  quads = false;
  /** Q8_0 under the biased kernel: every quant byte stored + 128 (repackQuads' flip, flipQ8). */
  q8Flipped = false;
  /** A K-quant: the first `repackedRows` rows in its type's 4-row group layout (repackK). */
  kQuads = false;
  /** Offset of a float copy in arena 0 (1-D weights, or made on first rmsNorm/addBias use). */
  f32Off = -1;
  /** The weight a row view reads (weightRows); undefined for a weight that owns its bytes. */
  parent?: WWeight;
  freed = false;
  constructor(
    readonly name: string,
    readonly type: GGMLType,
    readonly shape: readonly number[],
    readonly arena: number,
    readonly off: number,
    readonly bytes: number,
    readonly rowLen: number,
    readonly nRows: number,
    readonly rowBytes: number,
  ) {}
}

/** Keys and values of every layer, each a [nLayers][nCtx][kvDim] block in arena 0. */
export class WKV implements KVCache {
  freed = false;
  constructor(
    readonly nLayers: number,
    readonly nCtx: number,
    readonly kvDim: number,
    readonly type: KVType,
    readonly kOff: number,
    readonly vOff: number,
    readonly bytes: number,
    /**
     * Elements of one KV head: each layer's keys (and values) are kept head by head,
     * `[kvDim / headDim][nCtx × headDim]` (with headDim = kvDim: `[nCtx × kvDim]`).
     */
    readonly headDim: number = kvDim,
  ) {}
  /** Bytes per cached element. */
  get esz(): number {
    return this.type === "f16" ? 2 : 4;
  }
  /** Bytes of one layer's keys (or values). */
  layerBytes(): number {
    return this.nCtx * this.kvDim * this.esz;
  }
}

/** A growable scratch block of one arena. */
export class Scratch {
  off = 0;
  bytes = 0;
  constructor(readonly arena: Arena, readonly what: string) {}
  /** The block's offset, grown (and possibly moved) to hold at least `bytes`. */
  ensure(bytes: number): number {
    if (bytes <= this.bytes) return this.off;
    // The old block is released before the new one is found (it may be reused in place), so
    // from here this scratch holds nothing until a block is found: a failure must not leave it
    // pointing at freed memory another allocation may now own.
    const had = this.bytes;
    if (had) this.arena.release(this.off, had);
    this.bytes = 0;
    const want = Math.max(bytes, Math.min(had * 2, bytes * 2));
    let off = this.arena.alloc(want);
    let got = want;
    if (off === undefined) {
      off = this.arena.alloc(bytes);
      got = bytes;
    }
    if (off === undefined) {
      throw new BackendMemoryError(
        `wasm backend: memory ${this.arena.index} (cap ${this.arena.cap} bytes) has no room for ` +
          `${bytes} bytes of ${this.what} scratch; raise memoryCap`,
      );
    }
    this.off = off;
    this.bytes = got;
    return off;
  }
}

/** Per-arena state: scratch blocks and the activation-conversion cache. */
export class ArenaState {
  readonly act: Scratch;
  readonly xin: Scratch;
  readonly out: Scratch;
  readonly thr: Scratch;
  thrStride = 0;
  actBuf = 0;
  actVersion = -1;
  actKind = -1;
  actRows = 0;
  actN = 0;
  /** What the cached activation carries after its sums: 0 nothing, 1 the Q8_0 kernel's P/N
   * planes, 2 the row groups of the biased Q8_0 and the Q4_0 kernels (Q8G). */
  actPN = 0;
  /** Whether it carries the Q4_K kernel's reordered quants (permuteQ4KAct). */
  actQ4K = false;
  /** Whether it carries the Q6_K and Q2_K kernels' group sums as i16 (permuteQ6KAct). */
  actQ6K = false;
  /** Whether it carries the Q5_K kernel's class-major quants and sums (permuteQ5KAct). */
  actQ5K = false;
  /** Whether it carries the Q3_K kernel's class-major quants and corrections (permuteQ3KAct). */
  actQ3K = false;
  constructor(readonly arena: Arena) {
    this.act = new Scratch(arena, "activation");
    this.xin = new Scratch(arena, "input copy");
    this.out = new Scratch(arena, "output");
    this.thr = new Scratch(arena, "per-thread");
  }

  /** Per-thread scratch of `bytes` for `threads` threads: [offset, stride]. */
  threadScratch(bytes: number, threads: number): [number, number] {
    const stride = align(bytes);
    if (stride > this.thrStride) {
      this.thr.ensure(stride * threads);
      this.thrStride = stride;
    }
    return [this.thr.off, this.thrStride];
  }
}

const MiB = 1024 * 1024;

/** Undo the + 128 of a flipped Q8_0 row (WWeight.q8Flipped) in place; returns `row`. */
export function unflipQ8(row: Uint8Array): Uint8Array {
  for (let b = 0; b < row.length; b += 34) {
    for (let i = b + 2; i < b + 34; i++) row[i] ^= 0x80;
  }
  return row;
}

/** Round up to the 64-byte alignment every kernel address keeps. */
export const align = (n: number): number => Math.ceil(n / 64) * 64;

/** The arenas of one backend: where weights, buffers and scratch are placed. */
export class Memories {
  readonly arenas: Arena[] = [];
  readonly states: ArenaState[] = [];
  /** Each arena's kernels, by arena index (what a job's ARENA field selects). */
  readonly kernels: Kernels[] = [];
  /**
   * Room kept free for activations/KV (arena 0) and matmul scratch (others); untouched pages of
   * a memory cost address space only, not RSS.
   */
  readonly reserve0: number;
  readonly reserveN: number;

  constructor(
    readonly module: WebAssembly.Module,
    readonly cap: number,
    readonly pool: Pool,
  ) {
    this.reserve0 = Math.min(cap / 2, 512 * MiB);
    this.reserveN = Math.min(cap / 8, 256 * MiB);
    this.#push(new Arena(0, module, cap));
  }

  /** Arena 0: activations, KV caches, float copies of 1-D weights. */
  get a0(): Arena {
    return this.arenas[0];
  }

  #push(a: Arena): void {
    this.arenas.push(a);
    this.states.push(new ArenaState(a));
    this.kernels.push(a.k);
  }

  /** Open one more memory and hand it to the workers. */
  addArena(): Arena {
    const a = new Arena(this.arenas.length, this.module, this.cap);
    this.#push(a);
    this.pool.addArena(a.memory, this.arenas.length);
    return a;
  }

  /** [arena, offset] of `bytes` for a weight: the first arena with room beyond its reserve. */
  placeWeight(bytes: number): [number, number] {
    for (const a of this.arenas) {
      if (a.available - bytes < (a.index === 0 ? this.reserve0 : this.reserveN)) continue;
      const off = a.alloc(bytes);
      if (off !== undefined) return [a.index, off];
    }
    const a = this.addArena();
    const off = bytes + this.reserveN <= a.cap ? a.alloc(bytes) : undefined;
    if (off === undefined) {
      throw new Error(
        `wasm backend: a weight of ${bytes} bytes (+ ${this.reserveN} bytes of scratch) does ` +
          `not fit one memory of ${a.cap} bytes; raise memoryCap (max 4 GiB)`,
      );
    }
    return [a.index, off];
  }

  /** Offset of `bytes` in arena 0, or an error naming `what` when it is full. */
  alloc0(bytes: number, what: string): number {
    const a0 = this.a0;
    const off = a0.alloc(bytes);
    if (off === undefined) {
      throw new BackendMemoryError(
        `wasm backend: no room for ${what} (${bytes} bytes) in the activation memory ` +
          `(cap ${a0.cap} bytes, ${a0.available} free); raise memoryCap or free buffers`,
      );
    }
    return off;
  }

  /** Float copy of a weight in arena 0 (for rmsNorm / addBias), made on first use. */
  floats(w: WWeight): number {
    if (w.f32Off >= 0) return w.f32Off;
    const n = w.rowLen * w.nRows;
    const off = this.alloc0(n * 4, `float copy of ${w.name}`);
    const src = this.arenas[w.arena].u8;
    const dst = this.a0.f32;
    for (let r = 0; r < w.nRows; r++) {
      let rowSrc = src;
      let rowOff = w.off + r * w.rowBytes;
      if (w.q8Flipped) {
        // (a weight of fewer than 4 rows: all of them row-major, flipped)
        rowSrc = unflipQ8(src.slice(rowOff, rowOff + w.rowBytes));
        rowOff = 0;
      }
      dequantizeRow(w.type, rowSrc, rowOff, dst, off / 4 + r * w.rowLen, w.rowLen);
    }
    w.f32Off = off;
    return off;
  }
}

/** `b` as this backend's buffer, live. */
export function wbuf(b: Buf): WBuf {
  if (!(b instanceof WBuf)) throw new Error("buffer does not belong to the wasm backend");
  if (b.freed) throw new Error("wasm backend: buffer used after free");
  return b;
}

/** `w` as this backend's weight, live. */
export function wweight(w: Weight): WWeight {
  if (!(w instanceof WWeight)) {
    throw new Error(`weight ${w.name} does not belong to the wasm backend`);
  }
  // A view has no bytes of its own: freeing its weight ends it (its rows may be reused).
  if (w.freed || w.parent?.freed) {
    throw new Error(`wasm backend: weight ${w.name} used after free`);
  }
  return w;
}

/** `c` as this backend's KV cache, live. */
export function wkv(c: KVCache): WKV {
  if (!(c instanceof WKV)) throw new Error("KV cache does not belong to the wasm backend");
  if (c.freed) throw new Error("wasm backend: KV cache used after free");
  return c;
}

/** Throws unless `b` holds elements [start, end). */
export function need(b: WBuf, end: number, what: string, start = 0): void {
  needElements(b.length, end, what, start);
}
