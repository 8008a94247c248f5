/**
 * The matmul shaped for adapters that run shaders on the CPU (matmul_cpu.wgsl): the unrolled
 * dot product of one group of blocks, generated here per weight type and register tile.
 *
 * Why a separate kernel: on Mesa's llvmpipe every storage load is a loop over the invocations of
 * a SIMD group doing one scalar load each, whatever the address, so the cost of matmul.wgsl is
 * its count of loads, not bytes: about 22 u32 loads per Q8_0 block and activation row. Here one
 * invocation owns R weight rows and TT activation rows, reads 16 bytes per load, and every
 * weight word is reused for TT activation rows and every activation word for R weight rows.
 * Sums keep matmul.wgsl's order (integer block sums, ggml's float scaling, blocks in order per
 * row), so results are bit-identical to it.
 *
 * @module
 */
import { GGMLType } from "../../quant/types.ts";

/** What a block's WGSL is written with (see CpuType.block). */
interface BlockIO {
  /** The u32 at byte `o` (even) of the weight block. */
  w(o: number): string;
  /** The i-th u32 of the activation block's int8 quants. */
  a(i: number): string;
  /** The same as four i32 (unpacked once per activation block, shared by the R weight rows). */
  ax(i: number): string;
  /** `expr` (a weight word) unpacked by `fn` (s8x4 or u7x4), once per weight block. */
  wx(fn: "s8x4" | "u7x4", expr: string): string;
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
  block(io: BlockIO, unpack: boolean): string;
}

const WORDS = [0, 1, 2, 3, 4, 5, 6, 7];

const CPU_TYPES: Partial<Record<GGMLType, CpuType>> = {
  [GGMLType.Q8_0]: {
    blockBytes: 34,
    group: 8,
    block: (io, unpack) => {
      const s = WORDS.map((i) =>
        unpack
          ? `dot(${io.wx("s8x4", io.w(2 + 4 * i))}, ${io.ax(i)})`
          : `dot4i8(${io.w(2 + 4 * i)}, ${io.a(i)})`
      );
      return `${io.acc} = ${io.acc} + f32(${s.join(" + ")}) * ` +
        `(f16_to_f32(${io.w(0)} & 0xffffu) * ${io.ad});`;
    },
  },
  [GGMLType.Q4_0]: {
    blockBytes: 18,
    group: 8,
    block: (io, unpack) => {
      const s: string[] = [];
      const sa: string[] = [];
      for (let i = 0; i < 4; i++) {
        const q = io.w(2 + 4 * i);
        const lo = `${q} & 0x0f0f0f0fu`, hi = `(${q} >> 4u) & 0x0f0f0f0fu`;
        if (unpack) {
          s.push(`dot(${io.wx("u7x4", lo)}, ${io.ax(i)})`);
          s.push(`dot(${io.wx("u7x4", hi)}, ${io.ax(4 + i)})`);
          sa.push(`dot(${io.ax(i)} + ${io.ax(4 + i)}, vec4<i32>(1))`);
        } else {
          s.push(`dot4i8(${lo}, ${io.a(i)})`, `dot4i8(${hi}, ${io.a(4 + i)})`);
          sa.push(`sum4i8(${io.a(i)})`, `sum4i8(${io.a(4 + i)})`);
        }
      }
      return `${io.acc} = ${io.acc} + f32((${s.join(" + ")}) - 8i * (${sa.join(" + ")})) * ` +
        `f16_to_f32(${io.w(0)} & 0xffffu) * ${io.ad};`;
    },
  },
};

/** Whether matmul_cpu.wgsl multiplies `type` with rows of `k` elements. */
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
  unpack = true,
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
  const body: string[] = [];
  for (let r = 0; r < R; r++) body.push(`let g${r} = w${r} + g * ${groupBytes / 16}u;`);
  const loaded = new Set<string>();
  const vec = (r: number, m: number) => {
    const name = `v${r}_${m}`;
    if (!loaded.has(name)) {
      loaded.add(name);
      body.push(`let ${name} = W[g${r} + ${m}u];`);
    }
    return name;
  };
  // The u32 at byte `o` (even) of the group of row r.
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
    const ax = new Map<string, string>();
    for (let r = 0; r < R; r++) {
      // Name this block's words once per row (the same expression feeds every token).
      const names = new Map<string, string>();
      const memo = (key: string, expr: string) => {
        let n = names.get(key);
        if (!n) {
          n = `q${r}_${b}_${names.size}`;
          body.push(`let ${n} = ${expr};`);
          names.set(key, n);
        }
        return n;
      };
      for (let j = 0; j < TT; j++) {
        const a = (i: number) => `a${j}_${b}_${i >> 2}.${XYZW[i & 3]}`;
        const io: BlockIO = {
          w: (o) => memo(`w${o}`, word(r, b * t.blockBytes + o)),
          a,
          ax: (i) => {
            const key = `${j}_${i}`;
            let n = ax.get(key);
            if (!n) {
              n = `x${j}_${b}_${i}`;
              body.push(`let ${n} = s8x4(${a(i)});`);
              ax.set(key, n);
            }
            return n;
          },
          wx: (fn, expr) => memo(`${fn}(${expr})`, `${fn}(${expr})`),
          ad: `bitcast<f32>(s${j}_${b >> 2}.${XYZW[b & 3]})`,
          acc: `acc${r}_${j}`,
        };
        body.push(t.block(io, unpack));
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
