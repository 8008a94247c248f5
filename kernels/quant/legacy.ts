/**
 * The 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (weights) and Q8_1 (activations).
 *
 * Layouts (ggml-common.h, little-endian, no padding):
 * - block_q4_0 { f16 d; u8 qs[16] }            x = (q - 8)·d
 * - block_q4_1 { f16 d; f16 m; u8 qs[16] }     x = q·d + m
 * - block_q5_0 { f16 d; u8 qh[4]; u8 qs[16] }  x = (q - 16)·d, bit 4 of element j in qh bit j
 * - block_q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16] }  x = q·d + m
 * - block_q8_0 { f16 d; i8 qs[32] }            x = q·d
 * - block_q8_1 { f16 d; f16 s; i8 qs[32] }     x = q·d, s = d·Σq (lets Q4_1/Q5_1 fold in m)
 * In the 4/5-bit formats byte j holds element j in its low nibble and element j+16 in its high.
 *
 * Every function is ported from ggml (ggml-quants.c `dequantize_row_*` / `quantize_row_*_ref`,
 * ggml-cpu/quants.c `ggml_vec_dot_*_generic`) with C's float arithmetic replayed through
 * `Math.fround`, so results are bit-identical to ggml's plain C path.
 */
import { f16At, f32ToF16, setU16At } from "./float.ts";

const fr = Math.fround;

/** C `roundf`: half away from zero. */
function roundf(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

/** Reinterpret a byte as int8. */
function i8(b: number): number {
  return (b << 24) >> 24;
}

/** Bytes per block of each format. */
export const Q4_0_BYTES = 18;
/** Bytes per Q4_1 block. */
export const Q4_1_BYTES = 20;
/** Bytes per Q5_0 block. */
export const Q5_0_BYTES = 22;
/** Bytes per Q5_1 block. */
export const Q5_1_BYTES = 24;
/** Bytes per Q8_0 block. */
export const Q8_0_BYTES = 34;
/** Bytes per Q8_1 block. */
export const Q8_1_BYTES = 36;

function checkBlocks(n: number, what: string): number {
  if (n % 32 !== 0) throw new Error(`${what}: ${n} elements is not a multiple of 32`);
  return n / 32;
}

function qh32(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
}

// ----------------------------------------------------------------------------- dequantize

/** dequantize_row_q4_0 */
export function dequantizeQ4_0(
  src: Uint8Array,
  so: number,
  out: Float32Array,
  oo: number,
  n: number,
): void {
  const nb = checkBlocks(n, "Q4_0");
  for (let i = 0; i < nb; i++) {
    const b = so + i * Q4_0_BYTES;
    const d = f16At(src, b);
    const y = oo + i * 32;
    for (let j = 0; j < 16; j++) {
      const q = src[b + 2 + j];
      out[y + j] = ((q & 0x0f) - 8) * d;
      out[y + j + 16] = ((q >> 4) - 8) * d;
    }
  }
}

/** dequantize_row_q4_1 */
export function dequantizeQ4_1(
  src: Uint8Array,
  so: number,
  out: Float32Array,
  oo: number,
  n: number,
): void {
  const nb = checkBlocks(n, "Q4_1");
  for (let i = 0; i < nb; i++) {
    const b = so + i * Q4_1_BYTES;
    const d = f16At(src, b);
    const m = f16At(src, b + 2);
    const y = oo + i * 32;
    for (let j = 0; j < 16; j++) {
      const q = src[b + 4 + j];
      out[y + j] = fr((q & 0x0f) * d) + m;
      out[y + j + 16] = fr((q >> 4) * d) + m;
    }
  }
}

/** dequantize_row_q5_0 */
export function dequantizeQ5_0(
  src: Uint8Array,
  so: number,
  out: Float32Array,
  oo: number,
  n: number,
): void {
  const nb = checkBlocks(n, "Q5_0");
  for (let i = 0; i < nb; i++) {
    const b = so + i * Q5_0_BYTES;
    const d = f16At(src, b);
    const qh = qh32(src, b + 2);
    const y = oo + i * 32;
    for (let j = 0; j < 16; j++) {
      const xh0 = ((qh >>> j) << 4) & 0x10;
      const xh1 = (qh >>> (j + 12)) & 0x10;
      const q = src[b + 6 + j];
      out[y + j] = (((q & 0x0f) | xh0) - 16) * d;
      out[y + j + 16] = (((q >> 4) | xh1) - 16) * d;
    }
  }
}

/** dequantize_row_q5_1 */
export function dequantizeQ5_1(
  src: Uint8Array,
  so: number,
  out: Float32Array,
  oo: number,
  n: number,
): void {
  const nb = checkBlocks(n, "Q5_1");
  for (let i = 0; i < nb; i++) {
    const b = so + i * Q5_1_BYTES;
    const d = f16At(src, b);
    const m = f16At(src, b + 2);
    const qh = qh32(src, b + 4);
    const y = oo + i * 32;
    for (let j = 0; j < 16; j++) {
      const xh0 = ((qh >>> j) << 4) & 0x10;
      const xh1 = (qh >>> (j + 12)) & 0x10;
      const q = src[b + 8 + j];
      out[y + j] = fr(((q & 0x0f) | xh0) * d) + m;
      out[y + j + 16] = fr(((q >> 4) | xh1) * d) + m;
    }
  }
}

/** dequantize_row_q8_0 */
export function dequantizeQ8_0(
  src: Uint8Array,
  so: number,
  out: Float32Array,
  oo: number,
  n: number,
): void {
  const nb = checkBlocks(n, "Q8_0");
  for (let i = 0; i < nb; i++) {
    const b = so + i * Q8_0_BYTES;
    const d = f16At(src, b);
    const y = oo + i * 32;
    for (let j = 0; j < 32; j++) out[y + j] = i8(src[b + 2 + j]) * d;
  }
}

/** Q8_1 → f32 (ggml has no to_float for Q8_1; x = q·d, the sum `s` is redundant). */
export function dequantizeQ8_1(
  src: Uint8Array,
  so: number,
  out: Float32Array,
  oo: number,
  n: number,
): void {
  const nb = checkBlocks(n, "Q8_1");
  for (let i = 0; i < nb; i++) {
    const b = so + i * Q8_1_BYTES;
    const d = f16At(src, b);
    const y = oo + i * 32;
    for (let j = 0; j < 32; j++) out[y + j] = i8(src[b + 4 + j]) * d;
  }
}

// ----------------------------------------------------------------------------- quantize

/** quantize_row_q4_0_ref: d = max/-8 where max is the signed value of the largest |x|. */
export function quantizeRowQ4_0(
  x: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array((n / 32) * Q4_0_BYTES),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  const nb = checkBlocks(n, "Q4_0");
  for (let i = 0; i < nb; i++) {
    const xb = xOffset + i * 32;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const v = fr(x[xb + j]);
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = fr(max / -8);
    const id = d ? fr(1 / d) : 0;
    const o = outOffset + i * Q4_0_BYTES;
    setU16At(out, o, f32ToF16(d));
    for (let j = 0; j < 16; j++) {
      const x0 = fr(fr(x[xb + j]) * id);
      const x1 = fr(fr(x[xb + 16 + j]) * id);
      const xi0 = Math.min(15, i8(Math.trunc(fr(x0 + 8.5))));
      const xi1 = Math.min(15, i8(Math.trunc(fr(x1 + 8.5))));
      out[o + 2 + j] = (xi0 & 0xff) | ((xi1 << 4) & 0xff);
    }
  }
  return out;
}

/** quantize_row_q4_1_ref: d = (max - min)/15, m = min. */
export function quantizeRowQ4_1(
  x: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array((n / 32) * Q4_1_BYTES),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  const nb = checkBlocks(n, "Q4_1");
  for (let i = 0; i < nb; i++) {
    const xb = xOffset + i * 32;
    let min = Infinity;
    let max = -Infinity;
    for (let j = 0; j < 32; j++) {
      const v = fr(x[xb + j]);
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const d = fr(fr(max - min) / 15);
    const id = d ? fr(1 / d) : 0;
    const o = outOffset + i * Q4_1_BYTES;
    setU16At(out, o, f32ToF16(d));
    setU16At(out, o + 2, f32ToF16(min));
    for (let j = 0; j < 16; j++) {
      const x0 = fr(fr(fr(x[xb + j]) - min) * id);
      const x1 = fr(fr(fr(x[xb + 16 + j]) - min) * id);
      const xi0 = Math.min(15, i8(Math.trunc(fr(x0 + 0.5))));
      const xi1 = Math.min(15, i8(Math.trunc(fr(x1 + 0.5))));
      out[o + 4 + j] = (xi0 & 0xff) | ((xi1 << 4) & 0xff);
    }
  }
  return out;
}

/** quantize_row_q5_0_ref: d = max/-16. */
export function quantizeRowQ5_0(
  x: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array((n / 32) * Q5_0_BYTES),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  const nb = checkBlocks(n, "Q5_0");
  for (let i = 0; i < nb; i++) {
    const xb = xOffset + i * 32;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const v = fr(x[xb + j]);
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = fr(max / -16);
    const id = d ? fr(1 / d) : 0;
    const o = outOffset + i * Q5_0_BYTES;
    setU16At(out, o, f32ToF16(d));
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      const x0 = fr(fr(x[xb + j]) * id);
      const x1 = fr(fr(x[xb + 16 + j]) * id);
      const xi0 = Math.min(31, i8(Math.trunc(fr(x0 + 16.5)))) & 0xff;
      const xi1 = Math.min(31, i8(Math.trunc(fr(x1 + 16.5)))) & 0xff;
      out[o + 6 + j] = (xi0 & 0x0f) | ((xi1 & 0x0f) << 4);
      qh |= ((xi0 & 0x10) >>> 4) << j;
      qh |= ((xi1 & 0x10) >>> 4) << (j + 16);
    }
    out[o + 2] = qh & 0xff;
    out[o + 3] = (qh >>> 8) & 0xff;
    out[o + 4] = (qh >>> 16) & 0xff;
    out[o + 5] = (qh >>> 24) & 0xff;
  }
  return out;
}

/** quantize_row_q5_1_ref: d = (max - min)/31, m = min. */
export function quantizeRowQ5_1(
  x: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array((n / 32) * Q5_1_BYTES),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  const nb = checkBlocks(n, "Q5_1");
  for (let i = 0; i < nb; i++) {
    const xb = xOffset + i * 32;
    let min = Infinity;
    let max = -Infinity;
    for (let j = 0; j < 32; j++) {
      const v = fr(x[xb + j]);
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const d = fr(fr(max - min) / 31);
    const id = d ? fr(1 / d) : 0;
    const o = outOffset + i * Q5_1_BYTES;
    setU16At(out, o, f32ToF16(d));
    setU16At(out, o + 2, f32ToF16(min));
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      const x0 = fr(fr(fr(x[xb + j]) - min) * id);
      const x1 = fr(fr(fr(x[xb + 16 + j]) - min) * id);
      const xi0 = Math.trunc(fr(x0 + 0.5)) & 0xff;
      const xi1 = Math.trunc(fr(x1 + 0.5)) & 0xff;
      out[o + 8 + j] = (xi0 & 0x0f) | ((xi1 & 0x0f) << 4);
      qh |= ((xi0 & 0x10) >>> 4) << j;
      qh |= ((xi1 & 0x10) >>> 4) << (j + 16);
    }
    out[o + 4] = qh & 0xff;
    out[o + 5] = (qh >>> 8) & 0xff;
    out[o + 6] = (qh >>> 16) & 0xff;
    out[o + 7] = (qh >>> 24) & 0xff;
  }
  return out;
}

/** quantize_row_q8_0_ref (also ggml's CPU activation quantizer for Q4_0/Q5_0/Q8_0 weights). */
export function quantizeRowQ8_0(
  x: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array((n / 32) * Q8_0_BYTES),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  const nb = checkBlocks(n, "Q8_0");
  for (let i = 0; i < nb; i++) {
    const xb = xOffset + i * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) {
      const a = Math.abs(fr(x[xb + j]));
      amax = amax > a ? amax : a;
    }
    const d = fr(amax / 127);
    const id = d ? fr(1 / d) : 0;
    const o = outOffset + i * Q8_0_BYTES;
    setU16At(out, o, f32ToF16(d));
    for (let j = 0; j < 32; j++) out[o + 2 + j] = roundf(fr(fr(x[xb + j]) * id)) & 0xff;
  }
  return out;
}

/** quantize_row_q8_1_ref (activations for Q4_1/Q5_1 weights); s = fp16(Σq · d). */
export function quantizeRowQ8_1(
  x: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array((n / 32) * Q8_1_BYTES),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  const nb = checkBlocks(n, "Q8_1");
  for (let i = 0; i < nb; i++) {
    const xb = xOffset + i * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) {
      const a = Math.abs(fr(x[xb + j]));
      amax = amax > a ? amax : a;
    }
    const d = fr(amax / 127);
    const id = d ? fr(1 / d) : 0;
    const o = outOffset + i * Q8_1_BYTES;
    setU16At(out, o, f32ToF16(d));
    let sum = 0;
    for (let j = 0; j < 16; j++) {
      const q0 = i8(roundf(fr(fr(x[xb + j]) * id)) & 0xff);
      const q1 = i8(roundf(fr(fr(x[xb + 16 + j]) * id)) & 0xff);
      out[o + 4 + j] = q0 & 0xff;
      out[o + 4 + 16 + j] = q1 & 0xff;
      sum += q0 + q1;
    }
    setU16At(out, o + 2, f32ToF16(fr(sum * d)));
  }
  return out;
}

// ----------------------------------------------------------------------------- vec_dot

/** ggml_vec_dot_q4_0_q8_0_generic */
export function vecDotQ4_0Q8_0(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  const nb = checkBlocks(n, "Q4_0");
  let sumf = 0;
  for (let ib = 0; ib < nb; ib++) {
    const xb = wo + ib * Q4_0_BYTES;
    const yb = yo + ib * Q8_0_BYTES;
    let sumi0 = 0;
    let sumi1 = 0;
    for (let j = 0; j < 16; j++) {
      const q = w[xb + 2 + j];
      sumi0 += ((q & 0x0f) - 8) * i8(y[yb + 2 + j]);
      sumi1 += ((q >> 4) - 8) * i8(y[yb + 2 + 16 + j]);
    }
    const sumi = sumi0 + sumi1;
    sumf = fr(sumf + fr(fr(fr(sumi) * f16At(w, xb)) * f16At(y, yb)));
  }
  return sumf;
}

/** ggml_vec_dot_q4_1_q8_1_generic */
export function vecDotQ4_1Q8_1(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  const nb = checkBlocks(n, "Q4_1");
  let sumf = 0;
  for (let ib = 0; ib < nb; ib++) {
    const xb = wo + ib * Q4_1_BYTES;
    const yb = yo + ib * Q8_1_BYTES;
    let sumi0 = 0;
    let sumi1 = 0;
    for (let j = 0; j < 16; j++) {
      const q = w[xb + 4 + j];
      sumi0 += (q & 0x0f) * i8(y[yb + 4 + j]);
      sumi1 += (q >> 4) * i8(y[yb + 4 + 16 + j]);
    }
    const sumi = sumi0 + sumi1;
    const a = fr(fr(f16At(w, xb) * f16At(y, yb)) * fr(sumi));
    const b = fr(f16At(w, xb + 2) * f16At(y, yb + 2));
    sumf = fr(sumf + fr(a + b));
  }
  return sumf;
}

/** ggml_vec_dot_q5_0_q8_0_generic */
export function vecDotQ5_0Q8_0(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  const nb = checkBlocks(n, "Q5_0");
  let sumf = 0;
  for (let ib = 0; ib < nb; ib++) {
    const xb = wo + ib * Q5_0_BYTES;
    const yb = yo + ib * Q8_0_BYTES;
    const qh = qh32(w, xb + 2);
    let sumi0 = 0;
    let sumi1 = 0;
    for (let j = 0; j < 16; j++) {
      const xh0 = ((qh >>> j) & 1) << 4;
      const xh1 = ((qh >>> (j + 16)) & 1) << 4;
      const q = w[xb + 6 + j];
      sumi0 += (((q & 0x0f) | xh0) - 16) * i8(y[yb + 2 + j]);
      sumi1 += (((q >> 4) | xh1) - 16) * i8(y[yb + 2 + 16 + j]);
    }
    const sumi = sumi0 + sumi1;
    sumf = fr(sumf + fr(fr(f16At(w, xb) * f16At(y, yb)) * fr(sumi)));
  }
  return sumf;
}

/** ggml_vec_dot_q5_1_q8_1_generic */
export function vecDotQ5_1Q8_1(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  const nb = checkBlocks(n, "Q5_1");
  let sumf = 0;
  for (let ib = 0; ib < nb; ib++) {
    const xb = wo + ib * Q5_1_BYTES;
    const yb = yo + ib * Q8_1_BYTES;
    const qh = qh32(w, xb + 4);
    let sumi0 = 0;
    let sumi1 = 0;
    for (let j = 0; j < 16; j++) {
      const xh0 = ((qh >>> j) << 4) & 0x10;
      const xh1 = (qh >>> (j + 12)) & 0x10;
      const q = w[xb + 8 + j];
      sumi0 += ((q & 0x0f) | xh0) * i8(y[yb + 4 + j]);
      sumi1 += ((q >> 4) | xh1) * i8(y[yb + 4 + 16 + j]);
    }
    const sumi = sumi0 + sumi1;
    const a = fr(fr(f16At(w, xb) * f16At(y, yb)) * fr(sumi));
    const b = fr(f16At(w, xb + 2) * f16At(y, yb + 2));
    sumf = fr(sumf + fr(a + b));
  }
  return sumf;
}

/** ggml_vec_dot_q8_0_q8_0_generic */
export function vecDotQ8_0Q8_0(
  w: Uint8Array,
  wo: number,
  y: Uint8Array,
  yo: number,
  n: number,
): number {
  const nb = checkBlocks(n, "Q8_0");
  let sumf = 0;
  for (let ib = 0; ib < nb; ib++) {
    const xb = wo + ib * Q8_0_BYTES;
    const yb = yo + ib * Q8_0_BYTES;
    let sumi = 0;
    for (let j = 0; j < 32; j++) sumi += i8(w[xb + 2 + j]) * i8(y[yb + 2 + j]);
    sumf = fr(sumf + fr(fr(sumi) * fr(f16At(w, xb) * f16At(y, yb))));
  }
  return sumf;
}
