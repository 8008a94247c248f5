/**
 * f16 and bf16 scalars and rows, converted exactly as ggml converts them.
 *
 * f32 → f16 is ggml's `ggml_compute_fp32_to_fp16` (round to nearest even, NaN → quiet 0x7E00,
 * overflow → inf, subnormals rounded correctly); f32 → bf16 is `ggml_compute_fp32_to_bf16`
 * (round to nearest even on the top 16 bits, NaN forced quiet). f16/bf16 → f32 are exact.
 */

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);
const fr = Math.fround;

function bitsOf(f: number): number {
  F32[0] = f;
  return U32[0];
}

function fromBits(b: number): number {
  U32[0] = b >>> 0;
  return F32[0];
}

function decodeF16(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Every f16 bit pattern's f32 value, like ggml's `ggml_table_f32_f16` (so lookups are cheap). */
export const F16_TABLE: Float32Array = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = decodeF16(h);
  return t;
})();

/** f16 bits → f32 value (exact). */
export function f16ToF32(h: number): number {
  return F16_TABLE[h & 0xffff];
}

/** f32 → f16 bits, bit-for-bit ggml's `ggml_compute_fp32_to_fp16` (round to nearest even). */
export function f32ToF16(f: number): number {
  const scaleToInf = 2 ** 112;
  const scaleToZero = 2 ** -110;
  let base = fr(fr(Math.abs(fr(f)) * scaleToInf) * scaleToZero);
  const w = bitsOf(f);
  const shl1w = (w + w) >>> 0;
  const sign = (w & 0x80000000) >>> 0;
  let bias = (shl1w & 0xff000000) >>> 0;
  if (bias < 0x71000000) bias = 0x71000000;
  base = fr(fromBits(((bias >>> 1) + 0x07800000) >>> 0) + base);
  const bits = bitsOf(base);
  const expBits = (bits >>> 13) & 0x00007c00;
  const mantissaBits = bits & 0x00000fff;
  const nonsign = expBits + mantissaBits;
  return ((sign >>> 16) | (shl1w > 0xff000000 ? 0x7e00 : nonsign)) & 0xffff;
}

/** Round an f32 value through f16 and back (what storing into an f16 tensor does). */
export function roundF16(f: number): number {
  return F16_TABLE[f32ToF16(f)];
}

/** bf16 bits → f32 value (exact: bf16 is the top half of an f32). */
export function bf16ToF32(h: number): number {
  return fromBits((h & 0xffff) << 16);
}

/** f32 → bf16 bits, ggml's `ggml_compute_fp32_to_bf16`: nearest even, NaN forced quiet. */
export function f32ToBf16(f: number): number {
  const u = bitsOf(f);
  if ((u & 0x7fffffff) >>> 0 > 0x7f800000) return ((u >>> 16) | 64) & 0xffff;
  return (((u + (0x7fff + ((u >>> 16) & 1))) >>> 0) >>> 16) & 0xffff;
}

/** Convert `n` floats to little-endian f16 bytes (ggml_fp32_to_fp16_row). */
export function quantizeRowF16(
  x: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array(2 * n),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  for (let i = 0; i < n; i++) {
    const h = f32ToF16(x[xOffset + i]);
    out[outOffset + 2 * i] = h & 0xff;
    out[outOffset + 2 * i + 1] = h >>> 8;
  }
  return out;
}

/** Convert `n` floats to little-endian bf16 bytes (ggml_fp32_to_bf16_row_ref). */
export function quantizeRowBF16(
  x: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array(2 * n),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  for (let i = 0; i < n; i++) {
    const h = f32ToBf16(x[xOffset + i]);
    out[outOffset + 2 * i] = h & 0xff;
    out[outOffset + 2 * i + 1] = h >>> 8;
  }
  return out;
}

/** Little-endian u16 at byte `o`. */
export function u16(b: Uint8Array, o: number): number {
  return b[o] | (b[o + 1] << 8);
}

/** The f16 stored little-endian at byte `o`, as f32. */
export function f16At(b: Uint8Array, o: number): number {
  return F16_TABLE[b[o] | (b[o + 1] << 8)];
}

/** The f32 stored little-endian at byte `o`. */
export function f32At(b: Uint8Array, o: number): number {
  return fromBits(b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24));
}

/** Store `f` (rounded to f32) little-endian at byte `o`. */
export function setF32At(b: Uint8Array, o: number, f: number): void {
  const u = bitsOf(f);
  b[o] = u & 0xff;
  b[o + 1] = (u >>> 8) & 0xff;
  b[o + 2] = (u >>> 16) & 0xff;
  b[o + 3] = u >>> 24;
}

/** Store f16 bits little-endian at byte `o`. */
export function setU16At(b: Uint8Array, o: number, h: number): void {
  b[o] = h & 0xff;
  b[o + 1] = (h >>> 8) & 0xff;
}
