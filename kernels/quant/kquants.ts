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
 */
import { F16_TABLE, f16At, f32At, f32ToF16, setF32At, setU16At } from "./float.ts";

const fr = Math.fround;
const QK_K = 256;
const GROUP_MAX_EPS = fr(1e-15);

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

function checkBlocks(n: number, what: string): number {
  if (n % QK_K !== 0) throw new Error(`${what}: ${n} elements is not a multiple of ${QK_K}`);
  return n / QK_K;
}

function i8(b: number): number {
  return (b << 24) >> 24;
}

/** ggml's `nearest_int`: round half to even via the 1.5·2^23 trick (valid for |x| < 2^22). */
export function nearestInt(f: number): number {
  return fr(f + 12582912) - 12582912;
}

/** get_scale_min_k4: the j-th 6-bit (scale, min) pair of a Q4_K/Q5_K `scales[12]` array. */
function scaleMinK4(j: number, q: Uint8Array, o: number): [number, number] {
  if (j < 4) return [q[o + j] & 63, q[o + j + 4] & 63];
  return [
    (q[o + j + 4] & 0xf) | ((q[o + j - 4] >> 6) << 4),
    (q[o + j + 4] >> 4) | ((q[o + j] >> 6) << 4),
  ];
}

/** The 16 six-bit Q3_K scales (0..63, bias 32 not yet removed), unpacked as ggml's kmask code does. */
function q3Scales(b: Uint8Array, o: number, out: Int32Array): void {
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

// ----------------------------------------------------------------------------- quantize

/**
 * quantize_row_q8_K_ref, ggml's activation quantizer for K-quant matmuls. Note the sign: the
 * scale is -127/max with `max` the signed value of the largest |x|, so that element maps to -127
 * and the others are clamped to ≤ 127 only (values reach -127..127).
 */
export function quantizeRowQ8_K(
  x: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array((n / QK_K) * Q8_K_BYTES),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  const nb = checkBlocks(n, "Q8_K");
  for (let i = 0; i < nb; i++) {
    const xb = xOffset + i * QK_K;
    const o = outOffset + i * Q8_K_BYTES;
    let max = 0;
    let amax = 0;
    for (let j = 0; j < QK_K; j++) {
      const v = fr(x[xb + j]);
      const ax = Math.abs(v);
      if (ax > amax) {
        amax = ax;
        max = v;
      }
    }
    if (!amax) {
      // ggml leaves bsums untouched here; we zero the whole block so the output is defined.
      out.fill(0, o, o + Q8_K_BYTES);
      continue;
    }
    const iscale = fr(-127 / max);
    for (let j = 0; j < QK_K; j++) {
      const v = nearestInt(fr(iscale * fr(x[xb + j])));
      out[o + 4 + j] = Math.min(127, v) & 0xff;
    }
    for (let j = 0; j < 16; j++) {
      let sum = 0;
      for (let ii = 0; ii < 16; ii++) sum += i8(out[o + 4 + j * 16 + ii]);
      setU16At(out, o + 260 + 2 * j, sum & 0xffff);
    }
    setF32At(out, o, fr(1 / iscale));
  }
  return out;
}

/** make_qx_quants with qw = NULL (the path quantize_row_q6_K_ref uses); fills L with l + nmax. */
function makeQxQuants(
  n: number,
  nmax: number,
  x: Float32Array,
  xo: number,
  L: Int32Array,
  lo: number,
  rmseType: number,
): number {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[xo + i]);
    if (ax > amax) {
      amax = ax;
      max = x[xo + i];
    }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    return 0;
  }
  let iscale = fr(-nmax / max);
  if (rmseType === 0) {
    for (let i = 0; i < n; i++) {
      const l = nearestInt(fr(iscale * x[xo + i]));
      L[lo + i] = nmax + Math.max(-nmax, Math.min(nmax - 1, l));
    }
    return fr(1 / iscale);
  }
  let returnEarly = false;
  if (rmseType < 0) {
    rmseType = -rmseType;
    returnEarly = true;
  }
  const weight = (v: number): number =>
    rmseType === 1
      ? fr(v * v)
      : rmseType === 2
      ? 1
      : rmseType === 3
      ? Math.abs(v)
      : fr(Math.sqrt(Math.abs(v)));
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    const xi = x[xo + i];
    let l = nearestInt(fr(iscale * xi));
    l = Math.max(-nmax, Math.min(nmax - 1, l));
    L[lo + i] = l + nmax;
    const w = weight(xi);
    sumlx = fr(sumlx + fr(fr(w * xi) * l));
    suml2 = fr(suml2 + fr(fr(w * l) * l));
  }
  let scale = suml2 ? fr(sumlx / suml2) : 0;
  if (returnEarly) return suml2 > 0 ? fr(0.5 * fr(scale + fr(1 / iscale))) : fr(1 / iscale);
  let best = fr(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = fr(-fr(nmax + fr(fr(0.1) * is)) / max);
    sumlx = 0;
    suml2 = 0;
    for (let i = 0; i < n; i++) {
      const xi = x[xo + i];
      let l = nearestInt(fr(iscale * xi));
      l = Math.max(-nmax, Math.min(nmax - 1, l));
      const w = weight(xi);
      sumlx = fr(sumlx + fr(fr(w * xi) * l));
      suml2 = fr(suml2 + fr(fr(w * l) * l));
    }
    if (suml2 > 0 && fr(sumlx * sumlx) > fr(best * suml2)) {
      for (let i = 0; i < n; i++) {
        const l = nearestInt(fr(iscale * x[xo + i]));
        L[lo + i] = nmax + Math.max(-nmax, Math.min(nmax - 1, l));
      }
      scale = fr(sumlx / suml2);
      best = fr(scale * sumlx);
    }
  }
  return scale;
}

/** make_q3_quants (quantize_row_q3_K_ref); fills L with l + nmax. */
function makeQ3Quants(
  n: number,
  nmax: number,
  x: Float32Array,
  xo: number,
  L: Int32Array,
  lo: number,
  doRmse: boolean,
): number {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[xo + i]);
    if (ax > amax) {
      amax = ax;
      max = x[xo + i];
    }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    return 0;
  }
  const iscale = fr(-nmax / max);
  if (doRmse) {
    let sumlx = 0;
    let suml2 = 0;
    for (let i = 0; i < n; i++) {
      const xi = x[xo + i];
      let l = nearestInt(fr(iscale * xi));
      l = Math.max(-nmax, Math.min(nmax - 1, l));
      L[lo + i] = l;
      const w = fr(xi * xi);
      sumlx = fr(sumlx + fr(fr(w * xi) * l));
      suml2 = fr(suml2 + fr(fr(w * l) * l));
    }
    for (let itry = 0; itry < 5; itry++) {
      let nChanged = 0;
      for (let i = 0; i < n; i++) {
        const xi = x[xo + i];
        const w = fr(xi * xi);
        let slx = fr(sumlx - fr(fr(w * xi) * L[lo + i]));
        if (slx > 0) {
          let sl2 = fr(suml2 - fr(fr(w * L[lo + i]) * L[lo + i]));
          let newL = nearestInt(fr(fr(xi * sl2) / slx));
          newL = Math.max(-nmax, Math.min(nmax - 1, newL));
          if (newL !== L[lo + i]) {
            slx = fr(slx + fr(fr(w * xi) * newL));
            sl2 = fr(sl2 + fr(fr(w * newL) * newL));
            if (sl2 > 0 && fr(fr(slx * slx) * suml2) > fr(fr(sumlx * sumlx) * sl2)) {
              L[lo + i] = newL;
              sumlx = slx;
              suml2 = sl2;
              nChanged++;
            }
          }
        }
      }
      if (!nChanged) break;
    }
    for (let i = 0; i < n; i++) L[lo + i] += nmax;
    return suml2 > 0 ? fr(sumlx / suml2) : 0;
  }
  for (let i = 0; i < n; i++) {
    let l = nearestInt(fr(iscale * x[xo + i]));
    l = Math.max(-nmax, Math.min(nmax - 1, l));
    L[lo + i] = l + nmax;
  }
  return fr(1 / iscale);
}

/** make_qkx2_quants: fit scale and min (min ≤ 0) of an asymmetric group; returns [scale, -min]. */
function makeQkx2Quants(
  n: number,
  nmax: number,
  x: Float32Array,
  xo: number,
  weights: Float32Array,
  L: Uint8Array,
  lo: number,
  Laux: Uint8Array,
  rmin: number,
  rdelta: number,
  nstep: number,
  useMad: boolean,
): [number, number] {
  let min = x[xo];
  let max = x[xo];
  let sumW = weights[0];
  let sumX = fr(sumW * x[xo]);
  for (let i = 1; i < n; i++) {
    const xi = x[xo + i];
    if (xi < min) min = xi;
    if (xi > max) max = xi;
    const w = weights[i];
    sumW = fr(sumW + w);
    sumX = fr(sumX + fr(w * xi));
  }
  if (min > 0) min = 0;
  if (max === min) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    return [0, -min];
  }
  let iscale = fr(nmax / fr(max - min));
  let scale = fr(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = nearestInt(fr(iscale * fr(x[xo + i] - min)));
    L[lo + i] = Math.max(0, Math.min(nmax, l));
    let diff = fr(fr(fr(scale * L[lo + i]) + min) - x[xo + i]);
    diff = useMad ? Math.abs(diff) : fr(diff * diff);
    bestError = fr(bestError + fr(weights[i] * diff));
  }
  if (nstep < 1) return [scale, -min];
  for (let is = 0; is <= nstep; is++) {
    iscale = fr(fr(fr(rmin + fr(rdelta * is)) + nmax) / fr(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const xi = x[xo + i];
      let l = nearestInt(fr(iscale * fr(xi - min)));
      l = Math.max(0, Math.min(nmax, l));
      Laux[i] = l;
      const w = weights[i];
      const wl = fr(w * l);
      sumL = fr(sumL + wl);
      sumL2 = fr(sumL2 + fr(wl * l));
      sumXL = fr(sumXL + fr(wl * xi));
    }
    const D = fr(fr(sumW * sumL2) - fr(sumL * sumL));
    if (D > 0) {
      let thisScale = fr(fr(fr(sumW * sumXL) - fr(sumX * sumL)) / D);
      let thisMin = fr(fr(fr(sumL2 * sumX) - fr(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = fr(sumXL / sumL2);
      }
      let curError = 0;
      for (let i = 0; i < n; i++) {
        let diff = fr(fr(fr(thisScale * Laux[i]) + thisMin) - x[xo + i]);
        diff = useMad ? Math.abs(diff) : fr(diff * diff);
        curError = fr(curError + fr(weights[i] * diff));
      }
      if (curError < bestError) {
        for (let i = 0; i < n; i++) L[lo + i] = Laux[i];
        bestError = curError;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return [scale, -min];
}

function toF32(x: ArrayLike<number>, xOffset: number, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = x[xOffset + i];
  return a;
}

/** quantize_row_q2_K_ref (what llama-quantize does for Q2_K without an imatrix). */
export function quantizeRowQ2_K(
  xs: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array((n / QK_K) * Q2_K_BYTES),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  const nb = checkBlocks(n, "Q2_K");
  const x = toF32(xs, xOffset, n);
  const L = new Uint8Array(QK_K);
  const Laux = new Uint8Array(16);
  const weights = new Float32Array(16);
  const mins = new Float32Array(16);
  const scales = new Float32Array(16);
  const q4scale = 15;
  for (let i = 0; i < nb; i++) {
    const xb = i * QK_K;
    const y = outOffset + i * Q2_K_BYTES;
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 16; j++) {
      for (let l = 0; l < 16; l++) weights[l] = Math.abs(x[xb + 16 * j + l]);
      const [s, m] = makeQkx2Quants(
        16,
        3,
        x,
        xb + 16 * j,
        weights,
        L,
        16 * j,
        Laux,
        fr(-0.5),
        fr(0.1),
        15,
        true,
      );
      scales[j] = s;
      mins[j] = m;
      if (s > maxScale) maxScale = s;
      if (m > maxMin) maxMin = m;
    }
    if (maxScale > 0) {
      const iscale = fr(q4scale / maxScale);
      for (let j = 0; j < 16; j++) out[y + j] = nearestInt(fr(iscale * scales[j])) & 0xff;
      setU16At(out, y + 80, f32ToF16(fr(maxScale / q4scale)));
    } else {
      for (let j = 0; j < 16; j++) out[y + j] = 0;
      setU16At(out, y + 80, f32ToF16(0));
    }
    if (maxMin > 0) {
      const iscale = fr(q4scale / maxMin);
      for (let j = 0; j < 16; j++) out[y + j] |= (nearestInt(fr(iscale * mins[j])) << 4) & 0xff;
      setU16At(out, y + 82, f32ToF16(fr(maxMin / q4scale)));
    } else {
      setU16At(out, y + 82, f32ToF16(0));
    }
    const dAll = f16At(out, y + 80);
    const dMin = f16At(out, y + 82);
    for (let j = 0; j < 16; j++) {
      const d = fr(dAll * (out[y + j] & 0xf));
      if (!d) continue;
      const dm = fr(dMin * (out[y + j] >> 4));
      for (let ii = 0; ii < 16; ii++) {
        const l = nearestInt(fr(fr(x[xb + 16 * j + ii] + dm) / d));
        L[16 * j + ii] = Math.max(0, Math.min(3, l));
      }
    }
    for (let j = 0; j < QK_K; j += 128) {
      for (let l = 0; l < 32; l++) {
        out[y + 16 + j / 4 + l] = L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
          (L[j + l + 96] << 6);
      }
    }
  }
  return out;
}

/** quantize_row_q3_K_ref (what llama-quantize does for Q3_K without an imatrix). */
export function quantizeRowQ3_K(
  xs: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array((n / QK_K) * Q3_K_BYTES),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  const nb = checkBlocks(n, "Q3_K");
  const x = toF32(xs, xOffset, n);
  const L = new Int32Array(QK_K);
  const scales = new Float32Array(16);
  for (let i = 0; i < nb; i++) {
    const xb = i * QK_K;
    const y = outOffset + i * Q3_K_BYTES;
    let maxScale = 0;
    let amax = 0;
    for (let j = 0; j < 16; j++) {
      scales[j] = makeQ3Quants(16, 4, x, xb + 16 * j, L, 16 * j, true);
      const scale = Math.abs(scales[j]);
      if (scale > amax) {
        amax = scale;
        maxScale = scales[j];
      }
    }
    out.fill(0, y + 96, y + 108);
    if (maxScale) {
      const iscale = fr(-32 / maxScale);
      for (let j = 0; j < 16; j++) {
        let l = i8(nearestInt(fr(iscale * scales[j])) & 0xff);
        l = Math.max(-32, Math.min(31, l)) + 32;
        if (j < 8) out[y + 96 + j] = l & 0xf;
        else out[y + 96 + j - 8] |= (l & 0xf) << 4;
        l >>= 4;
        out[y + 96 + (j % 4) + 8] |= l << (2 * (j >> 2));
      }
      setU16At(out, y + 108, f32ToF16(fr(1 / iscale)));
    } else {
      setU16At(out, y + 108, f32ToF16(0));
    }
    const dAll = f16At(out, y + 108);
    for (let j = 0; j < 16; j++) {
      let sc = j < 8 ? out[y + 96 + j] & 0xf : out[y + 96 + j - 8] >> 4;
      sc = (sc | (((out[y + 96 + 8 + (j % 4)] >> (2 * (j >> 2))) & 3) << 4)) - 32;
      const d = fr(dAll * sc);
      if (!d) continue;
      for (let ii = 0; ii < 16; ii++) {
        let l = nearestInt(fr(x[xb + 16 * j + ii] / d));
        l = Math.max(-4, Math.min(3, l));
        L[16 * j + ii] = l + 4;
      }
    }
    out.fill(0, y, y + 32);
    let m = 0;
    let hm = 1;
    for (let j = 0; j < QK_K; j++) {
      if (L[j] > 3) {
        out[y + m] |= hm;
        L[j] -= 4;
      }
      if (++m === QK_K / 8) {
        m = 0;
        hm <<= 1;
      }
    }
    for (let j = 0; j < QK_K; j += 128) {
      for (let l = 0; l < 32; l++) {
        out[y + 32 + j / 4 + l] = L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
          (L[j + l + 96] << 6);
      }
    }
  }
  return out;
}

/** Shared body of quantize_row_q4_K_ref / quantize_row_q5_K_ref (nmax 15 or 31). */
function quantizeRowQ45K(
  xs: ArrayLike<number>,
  n: number,
  out: Uint8Array,
  xOffset: number,
  outOffset: number,
  five: boolean,
): Uint8Array {
  const nb = checkBlocks(n, five ? "Q5_K" : "Q4_K");
  const bytes = five ? Q5_K_BYTES : Q4_K_BYTES;
  const nmax = five ? 31 : 15;
  const x = toF32(xs, xOffset, n);
  const L = new Uint8Array(QK_K);
  const Laux = new Uint8Array(32);
  const weights = new Float32Array(32);
  const mins = new Float32Array(8);
  const scales = new Float32Array(8);
  for (let i = 0; i < nb; i++) {
    const xb = i * QK_K;
    const y = outOffset + i * bytes;
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 8; j++) {
      let sumX2 = 0;
      for (let l = 0; l < 32; l++) {
        const v = x[xb + 32 * j + l];
        sumX2 = fr(sumX2 + fr(v * v));
      }
      const avX = fr(Math.sqrt(fr(sumX2 / 32)));
      for (let l = 0; l < 32; l++) weights[l] = fr(avX + Math.abs(x[xb + 32 * j + l]));
      const [s, m] = five
        ? makeQkx2Quants(32, 31, x, xb + 32 * j, weights, L, 32 * j, Laux, -0.5, fr(0.1), 15, false)
        : makeQkx2Quants(32, 15, x, xb + 32 * j, weights, L, 32 * j, Laux, -1, fr(0.1), 20, false);
      scales[j] = s;
      mins[j] = m;
      if (s > maxScale) maxScale = s;
      if (m > maxMin) maxMin = m;
    }
    const invScale = maxScale > 0 ? fr(63 / maxScale) : 0;
    const invMin = maxMin > 0 ? fr(63 / maxMin) : 0;
    const sc = y + 4;
    for (let j = 0; j < 8; j++) {
      let ls = nearestInt(fr(invScale * scales[j])) & 0xff;
      let lm = nearestInt(fr(invMin * mins[j])) & 0xff;
      ls = Math.min(63, ls);
      lm = Math.min(63, lm);
      if (j < 4) {
        out[sc + j] = ls;
        out[sc + j + 4] = lm;
      } else {
        out[sc + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
        out[sc + j - 4] |= (ls >> 4) << 6;
        out[sc + j] |= (lm >> 4) << 6;
      }
    }
    setU16At(out, y, f32ToF16(fr(maxScale / 63)));
    setU16At(out, y + 2, f32ToF16(fr(maxMin / 63)));
    const dAll = f16At(out, y);
    const dMin = f16At(out, y + 2);
    for (let j = 0; j < 8; j++) {
      const [s, m] = scaleMinK4(j, out, sc);
      const d = fr(dAll * s);
      if (!d) continue;
      const dm = fr(dMin * m);
      for (let ii = 0; ii < 32; ii++) {
        const l = nearestInt(fr(fr(x[xb + 32 * j + ii] + dm) / d));
        L[32 * j + ii] = Math.max(0, Math.min(nmax, l));
      }
    }
    if (!five) {
      let q = y + 16;
      for (let j = 0; j < QK_K; j += 64) {
        for (let l = 0; l < 32; l++) out[q + l] = L[j + l] | (L[j + l + 32] << 4);
        q += 32;
      }
    } else {
      const qh = y + 16;
      let ql = y + 48;
      out.fill(0, qh, qh + 32);
      let m1 = 1;
      let m2 = 2;
      for (let nn = 0; nn < QK_K; nn += 64) {
        for (let j = 0; j < 32; j++) {
          let l1 = L[nn + j];
          if (l1 > 15) {
            l1 -= 16;
            out[qh + j] |= m1;
          }
          let l2 = L[nn + j + 32];
          if (l2 > 15) {
            l2 -= 16;
            out[qh + j] |= m2;
          }
          out[ql + j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
        ql += 32;
      }
    }
  }
  return out;
}

/** quantize_row_q4_K_ref (what llama-quantize does for Q4_K without an imatrix). */
export function quantizeRowQ4_K(
  x: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array((n / QK_K) * Q4_K_BYTES),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  return quantizeRowQ45K(x, n, out, xOffset, outOffset, false);
}

/** quantize_row_q5_K_ref (what llama-quantize does for Q5_K without an imatrix). */
export function quantizeRowQ5_K(
  x: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array((n / QK_K) * Q5_K_BYTES),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  return quantizeRowQ45K(x, n, out, xOffset, outOffset, true);
}

/** quantize_row_q6_K_ref (what llama-quantize does for Q6_K without an imatrix). */
export function quantizeRowQ6_K(
  xs: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array((n / QK_K) * Q6_K_BYTES),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  const nb = checkBlocks(n, "Q6_K");
  const x = toF32(xs, xOffset, n);
  const L = new Int32Array(QK_K);
  const scales = new Float32Array(16);
  for (let i = 0; i < nb; i++) {
    const xb = i * QK_K;
    const y = outOffset + i * Q6_K_BYTES;
    let maxScale = 0;
    let maxAbsScale = 0;
    for (let ib = 0; ib < 16; ib++) {
      const scale = makeQxQuants(16, 32, x, xb + 16 * ib, L, 16 * ib, 1);
      scales[ib] = scale;
      const absScale = Math.abs(scale);
      if (absScale > maxAbsScale) {
        maxAbsScale = absScale;
        maxScale = scale;
      }
    }
    if (maxAbsScale < GROUP_MAX_EPS) {
      out.fill(0, y, y + Q6_K_BYTES);
      continue;
    }
    const iscale = fr(-128 / maxScale);
    setU16At(out, y + 208, f32ToF16(fr(1 / iscale)));
    for (let ib = 0; ib < 16; ib++) {
      out[y + 192 + ib] = Math.min(127, nearestInt(fr(iscale * scales[ib]))) & 0xff;
    }
    const dAll = F16_TABLE[out[y + 208] | (out[y + 209] << 8)];
    for (let j = 0; j < 16; j++) {
      const d = fr(dAll * i8(out[y + 192 + j]));
      if (!d) continue;
      for (let ii = 0; ii < 16; ii++) {
        let l = nearestInt(fr(x[xb + 16 * j + ii] / d));
        l = Math.max(-32, Math.min(31, l));
        L[16 * j + ii] = l + 32;
      }
    }
    let ql = y;
    let qh = y + 128;
    for (let j = 0; j < QK_K; j += 128) {
      for (let l = 0; l < 32; l++) {
        const q1 = L[j + l] & 0xf;
        const q2 = L[j + l + 32] & 0xf;
        const q3 = L[j + l + 64] & 0xf;
        const q4 = L[j + l + 96] & 0xf;
        out[ql + l] = q1 | (q3 << 4);
        out[ql + l + 32] = q2 | (q4 << 4);
        out[qh + l] = (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
          ((L[j + l + 96] >> 4) << 6);
      }
      ql += 64;
      qh += 32;
    }
  }
  return out;
}

// ----------------------------------------------------------------------------- vec_dot

const AUX8 = new Int32Array(QK_K);
const AUX32 = new Int32Array(8);
const SUMS = new Float32Array(8);
const SC16 = new Int32Array(16);

/** Σ over 8 lanes the way the generic K-quant dots do: aux32[l] += scale·(q8·a) per 8-chunk. */
function laneAccumulate(
  y: Uint8Array,
  q8: number,
  a: Int32Array,
  start: number,
  count: number,
  scale: number,
): void {
  for (let c = 0; c < count; c += 8) {
    for (let l = 0; l < 8; l++) {
      // aux16 = q8·a fits int16 for every format, so no wrap to replay.
      AUX32[l] += scale * (i8(y[q8 + start + c + l]) * a[start + c + l]);
    }
  }
}

/** ggml_vec_dot_q2_K_q8_K_generic */
export function vecDotQ2_KQ8_K(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  const nb = checkBlocks(n, "Q2_K");
  let sumf = 0;
  for (let i = 0; i < nb; i++) {
    const xb = wo + i * Q2_K_BYTES;
    const yb = yo + i * Q8_K_BYTES;
    let q2 = xb + 16;
    let q8 = yb + 4;
    const sc = xb;
    let summs = 0;
    for (let j = 0; j < 16; j++) {
      const bs = ((y[yb + 260 + 2 * j] | (y[yb + 261 + 2 * j] << 8)) << 16) >> 16;
      summs += bs * (w[sc + j] >> 4);
    }
    const yd = f32At(y, yb);
    const dall = fr(yd * f16At(w, xb + 80));
    const dmin = fr(yd * f16At(w, xb + 82));
    let isum = 0;
    let is = 0;
    for (let k = 0; k < QK_K / 128; k++) {
      let shift = 0;
      for (let j = 0; j < 4; j++) {
        let d = w[sc + is++] & 0xf;
        let isuml = 0;
        for (let l = 0; l < 16; l++) isuml += i8(y[q8 + l]) * ((w[q2 + l] >> shift) & 3);
        isum += d * isuml;
        d = w[sc + is++] & 0xf;
        isuml = 0;
        for (let l = 16; l < 32; l++) isuml += i8(y[q8 + l]) * ((w[q2 + l] >> shift) & 3);
        isum += d * isuml;
        shift += 2;
        q8 += 32;
      }
      q2 += 32;
    }
    sumf = fr(sumf + fr(fr(dall * fr(isum)) - fr(dmin * fr(summs))));
  }
  return sumf;
}

/** ggml_vec_dot_q3_K_q8_K_generic */
export function vecDotQ3_KQ8_K(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  const nb = checkBlocks(n, "Q3_K");
  SUMS.fill(0);
  for (let i = 0; i < nb; i++) {
    const xb = wo + i * Q3_K_BYTES;
    const yb = yo + i * Q8_K_BYTES;
    let q3 = xb + 32;
    const hm = xb;
    AUX32.fill(0);
    let a = 0;
    let m = 1;
    for (let j = 0; j < QK_K; j += 128) {
      for (let s = 0; s < 8; s += 2) {
        for (let l = 0; l < 32; l++) {
          AUX8[a + l] = ((w[q3 + l] >> s) & 3) - (w[hm + l] & m ? 0 : 4);
        }
        a += 32;
        m <<= 1;
      }
      q3 += 32;
    }
    q3Scales(w, xb + 96, SC16);
    for (let j = 0; j < 16; j++) laneAccumulate(y, yb + 4, AUX8, 16 * j, 16, SC16[j] - 32);
    const d = fr(f16At(w, xb + 108) * f32At(y, yb));
    for (let l = 0; l < 8; l++) SUMS[l] = fr(SUMS[l] + fr(d * fr(AUX32[l])));
  }
  let sumf = 0;
  for (let l = 0; l < 8; l++) sumf = fr(sumf + SUMS[l]);
  return sumf;
}

function vecDotQ45K(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
  five: boolean,
): number {
  const nb = checkBlocks(n, five ? "Q5_K" : "Q4_K");
  const bytes = five ? Q5_K_BYTES : Q4_K_BYTES;
  SUMS.fill(0);
  let sumf = 0;
  for (let i = 0; i < nb; i++) {
    const xb = wo + i * bytes;
    const yb = yo + i * Q8_K_BYTES;
    let q4 = xb + (five ? 48 : 16);
    const hm = xb + 16;
    AUX32.fill(0);
    let a = 0;
    let m = 1;
    for (let j = 0; j < QK_K / 64; j++) {
      for (let l = 0; l < 32; l++) {
        AUX8[a + l] = (w[q4 + l] & 0xf) + (five && (w[hm + l] & m) ? 16 : 0);
      }
      a += 32;
      m <<= 1;
      for (let l = 0; l < 32; l++) {
        AUX8[a + l] = (w[q4 + l] >> 4) + (five && (w[hm + l] & m) ? 16 : 0);
      }
      a += 32;
      m <<= 1;
      q4 += 32;
    }
    let sumi = 0;
    for (let j = 0; j < 16; j++) {
      const bs = ((y[yb + 260 + 2 * j] | (y[yb + 261 + 2 * j] << 8)) << 16) >> 16;
      sumi += bs * scaleMinK4(j >> 1, w, xb + 4)[1];
    }
    for (let j = 0; j < 8; j++) {
      laneAccumulate(y, yb + 4, AUX8, 32 * j, 32, scaleMinK4(j, w, xb + 4)[0]);
    }
    const yd = f32At(y, yb);
    const d = fr(f16At(w, xb) * yd);
    for (let l = 0; l < 8; l++) SUMS[l] = fr(SUMS[l] + fr(d * fr(AUX32[l])));
    const dmin = fr(f16At(w, xb + 2) * yd);
    sumf = fr(sumf - fr(dmin * fr(sumi)));
  }
  for (let l = 0; l < 8; l++) sumf = fr(sumf + SUMS[l]);
  return sumf;
}

/** ggml_vec_dot_q4_K_q8_K_generic */
export function vecDotQ4_KQ8_K(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  return vecDotQ45K(w, wo, y, yo, n, false);
}

/** ggml_vec_dot_q5_K_q8_K_generic */
export function vecDotQ5_KQ8_K(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  return vecDotQ45K(w, wo, y, yo, n, true);
}

/** ggml_vec_dot_q6_K_q8_K_generic */
export function vecDotQ6_KQ8_K(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  const nb = checkBlocks(n, "Q6_K");
  SUMS.fill(0);
  for (let i = 0; i < nb; i++) {
    const xb = wo + i * Q6_K_BYTES;
    const yb = yo + i * Q8_K_BYTES;
    let q4 = xb;
    let qh = xb + 128;
    AUX32.fill(0);
    let a = 0;
    for (let j = 0; j < QK_K; j += 128) {
      for (let l = 0; l < 32; l++) {
        const h = w[qh + l];
        AUX8[a + l] = ((w[q4 + l] & 0xf) | (((h >> 0) & 3) << 4)) - 32;
        AUX8[a + l + 32] = ((w[q4 + l + 32] & 0xf) | (((h >> 2) & 3) << 4)) - 32;
        AUX8[a + l + 64] = ((w[q4 + l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
        AUX8[a + l + 96] = ((w[q4 + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
      }
      a += 128;
      q4 += 64;
      qh += 32;
    }
    for (let j = 0; j < 16; j++) laneAccumulate(y, yb + 4, AUX8, 16 * j, 16, i8(w[xb + 192 + j]));
    const d = fr(f16At(w, xb + 208) * f32At(y, yb));
    for (let l = 0; l < 8; l++) SUMS[l] = fr(SUMS[l] + fr(d * fr(AUX32[l])));
  }
  let sumf = 0;
  for (let l = 0; l < 8; l++) sumf = fr(sumf + SUMS[l]);
  return sumf;
}
