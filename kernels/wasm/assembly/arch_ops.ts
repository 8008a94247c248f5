// deno-fmt-ignore-file
// deno-lint-ignore-file
// @ts-nocheck: AssemblyScript, not TypeScript (v128, i32, @inline …); compiled by ../build.ts
// Element-wise kernels the newer architectures add (gemma3, phi3), kept apart from index.ts's
// matmul and attention kernels. Addresses are byte offsets into the shared memory.

/** ggml_compute_fp32_to_fp16 (round to nearest even): the f16 bits of f. */
@inline function toF16Bits(f: f32): u32 {
  let base: f32 = (abs<f32>(f) * 5.192296858534828e33) * 7.703719777548943e-34; // 2^112, 2^-110
  const w = reinterpret<u32>(f);
  const shl1w = w + w;
  const sign = w & 0x80000000;
  let bias = shl1w & 0xff000000;
  if (bias < 0x71000000) bias = 0x71000000;
  base = reinterpret<f32>((bias >> 1) + 0x07800000) + base;
  const bits = reinterpret<u32>(base);
  const expBits = (bits >> 13) & 0x00007c00;
  const mantBits = bits & 0x00000fff;
  return (sign >> 16) | (shl1w > 0xff000000 ? 0x7e00 : expBits + mantBits);
}

/** x *= s over n floats (ggml_scale: one f32 multiply each, so SIMD lanes round the same). */
export function scaleF32(x: usize, n: i32, s: f32): void {
  const sv = f32x4.splat(s);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const p = <usize>i << 2;
    v128.store(x + p, f32x4.mul(v128.load(x + p), sv));
  }
  for (; i < n; i++) {
    const p = <usize>i << 2;
    store<f32>(x + p, load<f32>(x + p) * s);
  }
}

/**
 * out = gelu(g) ⊙ u over n floats, ggml_vec_geglu_f32 with GGML_GELU_FP16: gelu read from
 * `table` (65536 f32 values indexed by the f16 bits of g; kernels/gelu.ts writes it), g itself
 * at and above 10, 0 at and below −10.
 */
export function geglu(g: usize, u: usize, out: usize, n: i32, table: usize): void {
  for (let i = 0; i < n; i++) {
    const p = <usize>i << 2;
    const x = load<f32>(g + p);
    let y: f32 = 0;
    if (x >= 10) y = x * load<f32>(u + p);
    else if (x > -10) y = load<f32>(table + (<usize>toF16Bits(x) << 2)) * load<f32>(u + p);
    store<f32>(out + p, y);
  }
}
