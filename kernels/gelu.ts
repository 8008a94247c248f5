/**
 * ggml's GELU (tanh approximation) as its CPU backend computes it: from a 65536-entry f16 table
 * indexed by the input rounded to f16 (`ggml_table_gelu_f16`, GGML_GELU_FP16), exact pass-through
 * at and above 10, zero at and below −10.
 *
 * Why a table and not tanh: llama.cpp's gemma3 logits carry the table's f16 rounding (the exact
 * tanh GELU moves them by up to 1.9e-4, see ../shared/fixtures/README.md). Every backend reads this
 * one table (WASM and WebGPU get a copy), so they agree bit for bit.
 */
import { f16ToF32, f32ToF16 } from "./quant/float.ts";

const fr = Math.fround;
const SQRT_2_OVER_PI = fr(0.79788456080286535587989211986876);
const GELU_COEF_A = fr(0.044715);

/** ggml_gelu_f32 in float32: 0.5·x·(1 + tanhf(√(2/π)·x·(1 + 0.044715·x²))). */
function geluF32(x: number): number {
  const inner = fr(fr(SQRT_2_OVER_PI * x) * fr(1 + fr(fr(GELU_COEF_A * x) * x)));
  return fr(fr(0.5 * x) * fr(1 + fr(Math.tanh(inner))));
}

let table: Float32Array<ArrayBuffer> | undefined;

/** The table: entry h is gelu(f16 h) rounded to f16, as a float32. */
export function geluTable(): Float32Array<ArrayBuffer> {
  if (!table) {
    const t = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) t[h] = f16ToF32(f32ToF16(geluF32(f16ToF32(h))));
    table = t;
  }
  return table;
}

/** ggml_vec_geglu_f32 for one element: gelu(x) · g. */
export function gegluGgml(x: number, g: number): number {
  if (x <= -10) return 0;
  if (x >= 10) return fr(x * g);
  return fr(geluTable()[f32ToF16(x)] * g);
}
