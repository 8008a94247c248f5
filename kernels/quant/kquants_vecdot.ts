/**
 * The K-quant dot products against Q8_K activations (ggml-cpu/quants.c
 * `ggml_vec_dot_q{2..6}_K_q8_K_generic`), summed in ggml's lane order so the float results are
 * the ones its plain C code produces.
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
