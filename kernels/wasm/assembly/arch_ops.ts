// deno-fmt-ignore-file
// deno-lint-ignore-file
// @ts-nocheck: AssemblyScript, not TypeScript (v128, i32, @inline …); compiled by ../build.ts
// Element-wise kernels the newer architectures add (gemma3, phi3), kept apart from index.ts's
// matmul and attention kernels. Addresses are byte offsets into the shared memory.

// @ts-ignore: AssemblyScript resolves the extension itself
import { f32ToF16 } from "./f16";

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
    else if (x > -10) y = load<f32>(table + (<usize>f32ToF16(x) << 2)) * load<f32>(u + p);
    store<f32>(out + p, y);
  }
}
