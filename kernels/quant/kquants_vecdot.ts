/**
 * The K-quant dot products against Q8_K activations (ggml-cpu/quants.c
 * `ggml_vec_dot_q{2..6}_K_q8_K_generic`), summed in ggml's lane order so the float results are
 * the ones its plain C code produces — except Q4_K and Q6_K, which follow this engine's own order
 * (exact integer sums per super-block, one float step each; see vecDotQ4K and vecDotQ6_KQ8_K).
 *
 * @module
 */
import { f16At, f32At } from "./float.ts";
import { checkBlocks, i8, q3Scales, Q8_K_BYTES, scaleMinK4 } from "./kquants.ts";
import { Q2_K_BYTES, Q3_K_BYTES, Q4_K_BYTES, Q5_K_BYTES, Q6_K_BYTES } from "./kquants.ts";
import { QK_K } from "./types.ts";

const fr = Math.fround;

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

/** ggml_vec_dot_q5_K_q8_K_generic (8 class lanes). */
function vecDotQ5K(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  const nb = checkBlocks(n, "Q5_K");
  SUMS.fill(0);
  let sumf = 0;
  for (let i = 0; i < nb; i++) {
    const xb = wo + i * Q5_K_BYTES;
    const yb = yo + i * Q8_K_BYTES;
    let q4 = xb + 48;
    const hm = xb + 16;
    AUX32.fill(0);
    let a = 0;
    let m = 1;
    for (let j = 0; j < QK_K / 64; j++) {
      for (let l = 0; l < 32; l++) AUX8[a + l] = (w[q4 + l] & 0xf) + (w[hm + l] & m ? 16 : 0);
      a += 32;
      m <<= 1;
      for (let l = 0; l < 32; l++) AUX8[a + l] = (w[q4 + l] >> 4) + (w[hm + l] & m ? 16 : 0);
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

/**
 * Q4_K · Q8_K. Not ggml's generic order (8 class lanes): per super-block the exact integers
 * sumi = Σ_j sc_j·Σ q·a and summ = Σ_j m_j·bsum_j (j: the 8 sub-blocks of 32), then
 * sumf += (d·yd)·sumi − (dmin·yd)·summ, blocks in order (as ggml's Q2_K). The WASM kernels sum
 * each sub-block with relaxed dots whose lanes are activation or weight rows, which the class-lane
 * order cannot keep; every backend follows this order (llama.cpp's x86 SIMD order is neither, so
 * both are as close to its goldens).
 */
function vecDotQ4K(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  const nb = checkBlocks(n, "Q4_K");
  let sumf = 0;
  for (let i = 0; i < nb; i++) {
    const xb = wo + i * Q4_K_BYTES;
    const yb = yo + i * Q8_K_BYTES;
    let sumi = 0;
    let summ = 0;
    for (let j = 0; j < 8; j++) {
      const [sc, mn] = scaleMinK4(j, w, xb + 4);
      const q = xb + 16 + 32 * (j >> 1);
      const sh = 4 * (j & 1);
      const a = yb + 4 + 32 * j;
      let s = 0;
      for (let l = 0; l < 32; l++) s += ((w[q + l] >> sh) & 0xf) * i8(y[a + l]);
      sumi += sc * s;
      const b0 = ((y[yb + 260 + 4 * j] | (y[yb + 261 + 4 * j] << 8)) << 16) >> 16;
      const b1 = ((y[yb + 262 + 4 * j] | (y[yb + 263 + 4 * j] << 8)) << 16) >> 16;
      summ += mn * (b0 + b1);
    }
    const yd = f32At(y, yb);
    const d = fr(f16At(w, xb) * yd);
    const dmin = fr(f16At(w, xb + 2) * yd);
    sumf = fr(sumf + fr(fr(d * fr(sumi)) - fr(dmin * fr(summ))));
  }
  return sumf;
}

/** Q4_K · Q8_K in this engine's order (vecDotQ4K). */
export function vecDotQ4_KQ8_K(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  return vecDotQ4K(w, wo, y, yo, n);
}

/** ggml_vec_dot_q5_K_q8_K_generic */
export function vecDotQ5_KQ8_K(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  return vecDotQ5K(w, wo, y, yo, n);
}

/**
 * Q6_K · Q8_K. Not ggml's generic order (8 class lanes): per super-block the exact integer
 * sumi = Σ_g sc_g·(Σ q·a − 32·bsum_g) (g: the 16 groups of 16 elements, q the unsigned 6-bit
 * quant 0..63, bsum_g the Q8_K block's 16-element sum), then sumf += (d·yd)·sumi, blocks in order
 * — the order Q4_K follows (vecDotQ4K), for the same reason: the WASM kernels sum each group with
 * relaxed dots whose lanes are activation or weight rows, and every backend follows this order.
 * |sumi| ≤ 16·128·(16·32·127) < 2^28: exact in i32.
 */
export function vecDotQ6_KQ8_K(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  const nb = checkBlocks(n, "Q6_K");
  let sumf = 0;
  for (let i = 0; i < nb; i++) {
    const xb = wo + i * Q6_K_BYTES;
    const yb = yo + i * Q8_K_BYTES;
    let sumi = 0;
    for (let g = 0; g < 16; g++) {
      // elements 16g..16g+15: half h = g >> 3, quarter j = (g >> 1) & 3, l = 16(g & 1) + 0..15
      const h = g >> 3;
      const j = (g >> 1) & 3;
      const ql = xb + 64 * h + 32 * (j & 1) + 16 * (g & 1);
      const qh = xb + 128 + 32 * h + 16 * (g & 1);
      const a = yb + 4 + 16 * g;
      let s = 0;
      for (let l = 0; l < 16; l++) {
        const q = ((w[ql + l] >> (4 * (j >> 1))) & 0xf) | (((w[qh + l] >> (2 * j)) & 3) << 4);
        s += q * i8(y[a + l]);
      }
      const bs = ((y[yb + 260 + 2 * g] | (y[yb + 261 + 2 * g] << 8)) << 16) >> 16;
      sumi += i8(w[xb + 192 + g]) * (s - 32 * bs);
    }
    const d = fr(f16At(w, xb + 208) * f32At(y, yb));
    sumf = fr(sumf + fr(d * fr(sumi)));
  }
  return sumf;
}
