/**
 * The exports of build/kernels.wasm (see assembly/index.ts) and how to instantiate them over a
 * shared memory. Addresses are byte offsets in that memory; booleans are passed as 0/1.
 */

/** Function exports of the compiled AssemblyScript module. */
export interface Kernels {
  heapBase(): number;
  quantizeQ8(
    x: number,
    n: number,
    T: number,
    qs: number,
    d: number,
    s: number,
    q81: number,
    pn: number,
    biased: number,
  ): void;
  quantizeQ8K(x: number, n: number, T: number, qs: number, d: number, bsums: number): void;
  roundActs(x: number, y: number, n: number, mode: number): void;
  mmQ8_0: Mm32;
  mmQ8_0b: Mm32;
  relaxedDot(a: number, b: number): number;
  mmQ4_0: Mm32;
  mmQ4_1: Mm32;
  mmQ5_0: Mm32;
  mmQ5_1: Mm32;
  mmK(
    kind: number,
    w: number,
    rowBytes: number,
    nb: number,
    aq: number,
    ad: number,
    abs: number,
    T: number,
    out: number,
    outStride: number,
    r0: number,
    r1: number,
    scr: number,
    aq16: number,
  ): void;
  mmF(
    kind: number,
    w: number,
    rowBytes: number,
    n: number,
    x: number,
    T: number,
    out: number,
    outStride: number,
    r0: number,
    r1: number,
    scr: number,
  ): void;
  rmsNorm(x: number, w: number, out: number, rows: number, n: number, eps: number): void;
  addRows(x: number, b: number, rows: number, n: number): void;
  add(a: number, b: number, n: number): void;
  swiglu(g: number, u: number, out: number, n: number): void;
  rope(
    x: number,
    cs: number,
    rows: number,
    nHeads: number,
    headDim: number,
    ropeDim: number,
    neox: number,
  ): void;
  toF16(src: number, dst: number, n: number): void;
  streamRead(p: number, n: number): number;
  repack4(w: number, rowBytes: number, bb: number, nGroups: number, tmp: number): void;
  repackQuads(
    w: number,
    rowBytes: number,
    bb: number,
    nGroups: number,
    tmp: number,
    flip: number,
  ): void;
  flipQ8(w: number, nBlocks: number): void;
  repackNibbleQuads(w: number, rowBytes: number, bb: number, nGroups: number, tmp: number): void;
  repackQ4K(w: number, rowBytes: number, nGroups: number, tmp: number): void;
  repackQ2K(w: number, rowBytes: number, nGroups: number, tmp: number): void;
  repackQ3K(w: number, rowBytes: number, nGroups: number, tmp: number): void;
  repackQ5K(w: number, rowBytes: number, nGroups: number, tmp: number): void;
  repackQ6K(w: number, rowBytes: number, nGroups: number, tmp: number): void;
  permuteQ5KAct(qs: number, bsums: number, out: number, n: number, T: number): void;
  permuteQ3KAct(qs: number, out: number, n: number, T: number): void;
  permuteQ6KAct(bsums: number, bs16: number, n: number, T: number): void;
  permuteQ4KAct(qs: number, ad: number, bsums: number, out: number, n: number, T: number): void;
  attention(
    q: number,
    kc: number,
    vc: number,
    out: number,
    pos0: number,
    rows: number,
    nHeads: number,
    nKV: number,
    headDim: number,
    scale: number,
    /** Bit 0: f16 cache; the bits above: sliding window (0: none). */
    flags: number,
    w0: number,
    w1: number,
    scr: number,
    rowBlock: number,
    /** Elements between two KV heads' first entries (headDim: heads side by side in a row). */
    headStride: number,
    /** Parts each KV head's group of query heads is split into (a divisor of the group). */
    headSplits: number,
  ): void;
  storeHeads(
    src: number,
    dst: number,
    rows: number,
    kvDim: number,
    headDim: number,
    nCtx: number,
    f16: number,
  ): void;
  scaleF32(x: number, n: number, s: number): void;
  geglu(g: number, u: number, out: number, n: number, table: number): void;
}

/** Signature shared by the 32-element-block matmuls (mmQ8_0, mmQ4_0, …). */
export type Mm32 = (
  w: number,
  rowBytes: number,
  nb: number,
  aq: number,
  ad: number,
  as: number,
  T: number,
  out: number,
  outStride: number,
  r0: number,
  r1: number,
) => void;

/** Instantiate the kernels over `memory` (synchronous; the module is already compiled). */
export function instantiate(module: WebAssembly.Module, memory: WebAssembly.Memory): Kernels {
  const inst = new WebAssembly.Instance(module, {
    env: {
      memory,
      abort: (_msg: number, _file: number, line: number, col: number) => {
        throw new Error(`wasm kernel abort at ${line}:${col}`);
      },
    },
  });
  return inst.exports as unknown as Kernels;
}
