/**
 * The K-quant quantizers (ggml-quants.c `quantize_row_q{2..6}_K_ref`, what llama-quantize does
 * without an imatrix) and `quantize_row_q8_K_ref` for activations, byte-exact with ggml.
 *
 * @module
 */
import { F16_TABLE, f16At, f32ToF16, setF32At, setU16At } from "./float.ts";
import { checkBlocks, i8, nearestInt, Q8_K_BYTES, scaleMinK4 } from "./kquants.ts";
import { Q2_K_BYTES, Q3_K_BYTES, Q4_K_BYTES, Q5_K_BYTES, Q6_K_BYTES } from "./kquants.ts";
import { GROUP_MAX_EPS, makeQ3Quants, makeQkx2Quants, makeQxQuants } from "./kquants_search.ts";
import { QK_K } from "./types.ts";

const fr = Math.fround;

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
