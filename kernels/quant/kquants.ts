/**
 * The K-quant super-block formats (256 elements): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (weights) and
 * Q8_K (the activation format every K-quant weight is dotted against).
 *
 * Layouts (ggml-common.h, byte offsets within a block):
 * - block_q2_K (84):  scales[16] @0 (lo nibble scale, hi nibble min), qs[64] @16, d @80, dmin @82
 * - block_q3_K (110): hmask[32] @0, qs[64] @32, scales[12] @96 (16 × 6-bit), d @108
 * - block_q4_K (144): d @0, dmin @2, scales[12] @4 (8 × 6-bit scale + 8 × 6-bit min), qs[128] @16
 * - block_q5_K (176): d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48
 * - block_q6_K (210): ql[128] @0, qh[64] @128, scales[16] (int8) @192, d @208
 * - block_q8_K (292): d (f32) @0, qs[256] (int8) @4, bsums[16] (int16) @260
 *
 * Ported from ggml-quants.c (`dequantize_row_*`, `quantize_row_*_ref` and their helpers
 * `nearest_int`, `make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`) and ggml-cpu/quants.c
 * (`ggml_vec_dot_*_q8_K_generic`), replaying every C float operation through `Math.fround` so
 * the bytes and sums are the ones ggml's plain C code produces.
 *
 * This file holds the layouts, the helpers every K-quant file shares and the dequantizers;
 * `kquants_quantize.ts` the quantizers (with ggml's scale searches in `kquants_search.ts`),
 * `kquants_vecdot.ts` the dot products against Q8_K.
 */
import { f16At, f32At } from "./float.ts";
import { QK_K } from "./types.ts";

const fr = Math.fround;

/** Bytes per Q2_K super-block. */
export const Q2_K_BYTES = 84;
/** Bytes per Q3_K super-block. */
export const Q3_K_BYTES = 110;
/** Bytes per Q4_K super-block. */
export const Q4_K_BYTES = 144;
/** Bytes per Q5_K super-block. */
export const Q5_K_BYTES = 176;
/** Bytes per Q6_K super-block. */
export const Q6_K_BYTES = 210;
/** Bytes per Q8_K super-block. */
export const Q8_K_BYTES = 292;

/** Super-blocks in `n` elements; throws unless `n` is a multiple of QK_K. */
export function checkBlocks(n: number, what: string): number {
  if (n % QK_K !== 0) throw new Error(`${what}: ${n} elements is not a multiple of ${QK_K}`);
  return n / QK_K;
}

/** A byte read as int8. */
export function i8(b: number): number {
  return (b << 24) >> 24;
}

/** ggml's `nearest_int`: round half to even via the 1.5·2^23 trick (valid for |x| < 2^22). */
export function nearestInt(f: number): number {
  return fr(f + 12582912) - 12582912;
}

/** get_scale_min_k4: the j-th 6-bit (scale, min) pair of a Q4_K/Q5_K `scales[12]` array. */
export function scaleMinK4(j: number, q: Uint8Array, o: number): [number, number] {
  if (j < 4) return [q[o + j] & 63, q[o + j + 4] & 63];
  return [
    (q[o + j + 4] & 0xf) | ((q[o + j - 4] >> 6) << 4),
    (q[o + j + 4] >> 4) | ((q[o + j] >> 6) << 4),
  ];
}

/** The 16 six-bit Q3_K scales (0..63, bias 32 not yet removed), unpacked as ggml's kmask code does. */
export function q3Scales(b: Uint8Array, o: number, out: Int32Array): void {
  const rd = (p: number) => (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)) >>> 0;
  const kmask1 = 0x03030303;
  const kmask2 = 0x0f0f0f0f;
  const a0 = rd(o);
  const a1 = rd(o + 4);
  const tmp = rd(o + 8);
  const aux = [
    ((a0 & kmask2) | (((tmp >>> 0) & kmask1) << 4)) >>> 0,
    ((a1 & kmask2) | (((tmp >>> 2) & kmask1) << 4)) >>> 0,
    (((a0 >>> 4) & kmask2) | (((tmp >>> 4) & kmask1) << 4)) >>> 0,
    (((a1 >>> 4) & kmask2) | (((tmp >>> 6) & kmask1) << 4)) >>> 0,
  ];
  for (let j = 0; j < 16; j++) out[j] = i8((aux[j >> 2] >>> (8 * (j & 3))) & 0xff);
}

// ----------------------------------------------------------------------------- dequantize

/** dequantize_row_q2_K */
export function dequantizeQ2_K(
  src: Uint8Array,
  so: number,
  out: Float32Array,
  oo: number,
  n: number,
): void {
  const nb = checkBlocks(n, "Q2_K");
  let y = oo;
  for (let i = 0; i < nb; i++) {
    const b = so + i * Q2_K_BYTES;
    const d = f16At(src, b + 80);
    const min = f16At(src, b + 82);
    let q = b + 16;
    let is = 0;
    for (let nn = 0; nn < QK_K; nn += 128) {
      let shift = 0;
      for (let j = 0; j < 4; j++) {
        let sc = src[b + is++];
        let dl = fr(d * (sc & 0xf));
        let ml = fr(min * (sc >> 4));
        for (let l = 0; l < 16; l++) out[y++] = fr(dl * ((src[q + l] >> shift) & 3)) - ml;
        sc = src[b + is++];
        dl = fr(d * (sc & 0xf));
        ml = fr(min * (sc >> 4));
        for (let l = 0; l < 16; l++) out[y++] = fr(dl * ((src[q + l + 16] >> shift) & 3)) - ml;
        shift += 2;
      }
      q += 32;
    }
  }
}

/** dequantize_row_q3_K */
export function dequantizeQ3_K(
  src: Uint8Array,
  so: number,
  out: Float32Array,
  oo: number,
  n: number,
): void {
  const nb = checkBlocks(n, "Q3_K");
  const scales = new Int32Array(16);
  let y = oo;
  for (let i = 0; i < nb; i++) {
    const b = so + i * Q3_K_BYTES;
    const dAll = f16At(src, b + 108);
    q3Scales(src, b + 96, scales);
    let q = b + 32;
    const hm = b;
    let m = 1;
    let is = 0;
    for (let nn = 0; nn < QK_K; nn += 128) {
      let shift = 0;
      for (let j = 0; j < 4; j++) {
        let dl = fr(dAll * (scales[is++] - 32));
        for (let l = 0; l < 16; l++) {
          out[y++] = dl * (((src[q + l] >> shift) & 3) - ((src[hm + l] & m) ? 0 : 4));
        }
        dl = fr(dAll * (scales[is++] - 32));
        for (let l = 0; l < 16; l++) {
          out[y++] = dl * (((src[q + l + 16] >> shift) & 3) - ((src[hm + l + 16] & m) ? 0 : 4));
        }
        shift += 2;
        m <<= 1;
      }
      q += 32;
    }
  }
}

/** dequantize_row_q4_K */
export function dequantizeQ4_K(
  src: Uint8Array,
  so: number,
  out: Float32Array,
  oo: number,
  n: number,
): void {
  const nb = checkBlocks(n, "Q4_K");
  let y = oo;
  for (let i = 0; i < nb; i++) {
    const b = so + i * Q4_K_BYTES;
    const d = f16At(src, b);
    const min = f16At(src, b + 2);
    let q = b + 16;
    let is = 0;
    for (let j = 0; j < QK_K; j += 64) {
      const [sc1, m1v] = scaleMinK4(is, src, b + 4);
      const d1 = fr(d * sc1);
      const m1 = fr(min * m1v);
      const [sc2, m2v] = scaleMinK4(is + 1, src, b + 4);
      const d2 = fr(d * sc2);
      const m2 = fr(min * m2v);
      for (let l = 0; l < 32; l++) out[y++] = fr(d1 * (src[q + l] & 0xf)) - m1;
      for (let l = 0; l < 32; l++) out[y++] = fr(d2 * (src[q + l] >> 4)) - m2;
      q += 32;
      is += 2;
    }
  }
}

/** dequantize_row_q5_K */
export function dequantizeQ5_K(
  src: Uint8Array,
  so: number,
  out: Float32Array,
  oo: number,
  n: number,
): void {
  const nb = checkBlocks(n, "Q5_K");
  let y = oo;
  for (let i = 0; i < nb; i++) {
    const b = so + i * Q5_K_BYTES;
    const d = f16At(src, b);
    const min = f16At(src, b + 2);
    const qh = b + 16;
    let ql = b + 48;
    let is = 0;
    let u1 = 1;
    let u2 = 2;
    for (let j = 0; j < QK_K; j += 64) {
      const [sc1, m1v] = scaleMinK4(is, src, b + 4);
      const d1 = fr(d * sc1);
      const m1 = fr(min * m1v);
      const [sc2, m2v] = scaleMinK4(is + 1, src, b + 4);
      const d2 = fr(d * sc2);
      const m2 = fr(min * m2v);
      for (let l = 0; l < 32; l++) {
        out[y++] = fr(d1 * ((src[ql + l] & 0xf) + (src[qh + l] & u1 ? 16 : 0))) - m1;
      }
      for (let l = 0; l < 32; l++) {
        out[y++] = fr(d2 * ((src[ql + l] >> 4) + (src[qh + l] & u2 ? 16 : 0))) - m2;
      }
      ql += 32;
      is += 2;
      u1 <<= 2;
      u2 <<= 2;
    }
  }
}

/** dequantize_row_q6_K */
export function dequantizeQ6_K(
  src: Uint8Array,
  so: number,
  out: Float32Array,
  oo: number,
  n: number,
): void {
  const nb = checkBlocks(n, "Q6_K");
  let y = oo;
  for (let i = 0; i < nb; i++) {
    const b = so + i * Q6_K_BYTES;
    const d = f16At(src, b + 208);
    let ql = b;
    let qh = b + 128;
    let sc = b + 192;
    for (let nn = 0; nn < QK_K; nn += 128) {
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = src[qh + l];
        const q1 = ((src[ql + l] & 0xf) | (((h >> 0) & 3) << 4)) - 32;
        const q2 = ((src[ql + l + 32] & 0xf) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = ((src[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = ((src[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
        out[y + l] = fr(d * i8(src[sc + is])) * q1;
        out[y + l + 32] = fr(d * i8(src[sc + is + 2])) * q2;
        out[y + l + 64] = fr(d * i8(src[sc + is + 4])) * q3;
        out[y + l + 96] = fr(d * i8(src[sc + is + 6])) * q4;
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

/** dequantize_row_q8_K: x = q·d with d an f32. */
export function dequantizeQ8_K(
  src: Uint8Array,
  so: number,
  out: Float32Array,
  oo: number,
  n: number,
): void {
  const nb = checkBlocks(n, "Q8_K");
  for (let i = 0; i < nb; i++) {
    const b = so + i * Q8_K_BYTES;
    const d = f32At(src, b);
    for (let j = 0; j < QK_K; j++) out[oo + i * QK_K + j] = d * i8(src[b + 4 + j]);
  }
}
