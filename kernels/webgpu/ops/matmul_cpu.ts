/**
 * The matmul shaped for adapters that run shaders on the CPU (matmul_cpu.wgsl): the unrolled
 * dot product of one group of blocks, generated here per weight type and register tile.
 *
 * Why a separate kernel: on Mesa's llvmpipe every storage load is a loop over the invocations of
 * a SIMD group doing one scalar load each, whatever the address, so the cost of matmul.wgsl is
 * its count of loads, not bytes: about 22 u32 loads per Q8_0 block and activation row. Here one
 * invocation owns R weight rows and TT activation rows, reads 16 bytes per load, and unpacks
 * every weight word once for TT activation rows and every activation word once for R weight
 * rows. Sums keep matmul.wgsl's order (integer block sums, ggml's float scaling, blocks in order
 * per row), so results are bit-identical to it.
 *
 * Only Q8_0 for now: the same generator for Q4_0 was as fast, but llvmpipe's LLVM took 1-12 s to
 * compile each of its tiles (Q8_0: under 0.3 s).
 *
 * @module
 */
import { GGMLType } from "../../quant/types.ts";

/** What a block's WGSL is written with (see CpuType.block). */
interface BlockIO {
  /** The u32 at byte `o` (even) of the weight block. */
  w(o: number): string;
  /** The i-th u32 of the activation block's int8 quants, as four i32 (unpacked once). */
  ax(i: number): string;
  /** `expr` (a weight word) as four signed bytes (unpacked once per weight block). */
  wx(expr: string): string;
  /** The activation block's scale (f32). */
  ad: string;
  /** The accumulator. */
  acc: string;
}

/** Per weight type: block geometry and the WGSL of one block's dot with one activation row. */
interface CpuType {
  /** Bytes of one block. */
  readonly blockBytes: number;
  /** Blocks per step: the fewest that fill whole vec4s, a multiple of 4 (activation scales). */
  readonly group: number;
  /** A statement adding the weight block times one activation block to `io.acc`. */
  block(io: BlockIO): string;
}

const CPU_TYPES: Partial<Record<GGMLType, CpuType>> = {
  // block_q8_0: d (f16), qs[32]; quant.wgsl: f32(Σ qs·a) * (d * a_d), added in block order.
  [GGMLType.Q8_0]: {
    blockBytes: 34,
    group: 8,
    block: (io) => {
      const s = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => `dot(${io.wx(io.w(2 + 4 * i))}, ${io.ax(i)})`);
      return `${io.acc} = ${io.acc} + f32(${s.join(" + ")}) * ` +
        `(f16_to_f32(${io.w(0)} & 0xffffu) * ${io.ad});`;
    },
  },
};

/** Whether matmul_cpu.wgsl multiplies `type` with rows of `k` elements (whole groups). */
export function cpuMatmulFits(type: GGMLType, k: number): boolean {
  const t = CPU_TYPES[type];
  return t !== undefined && k % (32 * t.group) === 0;
}

const XYZW = "xyzw";

/** `{{…}}` values of matmul_cpu.wgsl for `type` with R weight rows and TT activation rows. */
export function cpuMatmulSubst(
  type: GGMLType,
  R: number,
  TT: number,
  wgs: number,
): Record<string, string | number> {
  const t = CPU_TYPES[type];
  if (!t) throw new Error(`matmul_cpu.wgsl has no dot for type ${type}`);
  const groupBytes = t.blockBytes * t.group;
  const decls: string[] = [];
  const stores: string[] = [];
  for (let r = 0; r < R; r++) {
    decls.push(
      `let w${r} = ((min(row0 + ${r}u, P.n_rows - 1u) + P.w_skip) * P.row_bytes) / 16u;`,
    );
  }
  for (let j = 0; j < TT; j++) {
    decls.push(`let t${j} = min(tok0 + ${j}u, P.n_tok - 1u);`);
    decls.push(`let aq${j} = t${j} * kq;`, `let ad${j} = (P.a_d_off + t${j} * nb) / 4u;`);
  }
  for (let r = 0; r < R; r++) {
    for (let j = 0; j < TT; j++) {
      decls.push(`var acc${r}_${j} = 0.0;`);
      stores.push(
        `if (row0 + ${r}u < P.n_rows && tok0 + ${j}u < P.n_tok) {`,
        `  O[(tok0 + ${j}u) * P.out_stride + P.out_off + row0 + ${r}u] = acc${r}_${j};`,
        `}`,
      );
    }
  }
  // Each value is a `let` emitted just before its first use, so loads and unpacking follow the
  // order of the sums (fewer live registers than loading a whole group first).
  const body: string[] = [];
  const once = (names: Map<string, string>, key: string, name: string, expr: string) => {
    let n = names.get(key);
    if (!n) {
      n = name;
      body.push(`let ${n} = ${expr};`);
      names.set(key, n);
    }
    return n;
  };
  for (let r = 0; r < R; r++) body.push(`let g${r} = w${r} + g * ${groupBytes / 16}u;`);
  const vecs = new Map<string, string>();
  const vec = (r: number, m: number) => once(vecs, `${r}_${m}`, `v${r}_${m}`, `wv(g${r} + ${m}u)`);
  // The u32 at byte `o` (even) of row r's group.
  const word = (r: number, o: number) => {
    const i = o >> 2;
    const lo = `${vec(r, i >> 2)}.${XYZW[i & 3]}`;
    if ((o & 3) === 0) return lo;
    const hi = `${vec(r, (i + 1) >> 2)}.${XYZW[(i + 1) & 3]}`;
    return `((${lo} >> 16u) | (${hi} << 16u))`;
  };
  for (let b = 0; b < t.group; b++) {
    for (let j = 0; j < TT; j++) {
      if (b % 4 === 0) {
        body.push(`let s${j}_${b / 4} = A[ad${j} + g * ${t.group / 4}u + ${b / 4}u];`);
      }
      body.push(
        `let a${j}_${b}_0 = A[aq${j} + (g * ${t.group}u + ${b}u) * 2u];`,
        `let a${j}_${b}_1 = A[aq${j} + (g * ${t.group}u + ${b}u) * 2u + 1u];`,
      );
    }
    const acts = new Map<string, string>();
    for (let r = 0; r < R; r++) {
      const words = new Map<string, string>();
      let nw = 0;
      for (let j = 0; j < TT; j++) {
        const io: BlockIO = {
          w: (o) => once(words, `w${o}`, `q${r}_${b}_${nw++}`, word(r, b * t.blockBytes + o)),
          ax: (i) =>
            once(acts, `${j}_${i}`, `x${j}_${b}_${i}`, `s8x4(a${j}_${b}_${i >> 2}.${XYZW[i & 3]})`),
          wx: (expr) => once(words, `s8x4(${expr})`, `q${r}_${b}_${nw++}`, `s8x4(${expr})`),
          ad: `bitcast<f32>(s${j}_${b >> 2}.${XYZW[b & 3]})`,
          acc: `acc${r}_${j}`,
        };
        body.push(t.block(io));
      }
    }
  }
  return {
    R,
    TT,
    WGS: wgs,
    GROUP: t.group,
    BLOCK_ELEMS: 32,
    GROUP_VEC4: groupBytes / 16,
    DECLS: decls.join("\n  "),
    BODY: body.join("\n    "),
    STORES: stores.join("\n  "),
  };
}
