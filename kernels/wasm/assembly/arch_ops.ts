// deno-fmt-ignore-file
// deno-lint-ignore-file
// @ts-nocheck: AssemblyScript, not TypeScript (v128, i32, @inline …); compiled by ../build.ts
// Element-wise kernels the newer architectures add (gemma3, phi3), kept apart from index.ts's
// matmul and attention kernels. Addresses are byte offsets into the shared memory.

// @ts-ignore: AssemblyScript resolves the extension itself
import { f32ToF16, f32ToF16x4 } from "./f16";

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
 * `table` (65536 f32 values indexed by the f16 bits of g; kernels/gelu.ts writes it), 0 at and
 * below −10, g itself at and above 10, and the table's value otherwise (NaN included, as in
 * ggml). Four lanes at a time: their f16 bits by f32ToF16's arithmetic on vectors, then four
 * table loads (a decode step of Gemma 3 1B's shape spent 1.7 ms here one element at a time).
 */
export function geglu(g: usize, u: usize, out: usize, n: i32, table: usize): void {
  const lo = f32x4.splat(-10);
  const hi = f32x4.splat(10);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const p = <usize>i << 2;
    const x = v128.load(g + p);
    const uu = v128.load(u + p);
    const h = f32ToF16x4(x);
    let t = f32x4.splat(load<f32>(table + (<usize>i32x4.extract_lane(h, 0) << 2)));
    t = f32x4.replace_lane(t, 1, load<f32>(table + (<usize>i32x4.extract_lane(h, 1) << 2)));
    t = f32x4.replace_lane(t, 2, load<f32>(table + (<usize>i32x4.extract_lane(h, 2) << 2)));
    t = f32x4.replace_lane(t, 3, load<f32>(table + (<usize>i32x4.extract_lane(h, 3) << 2)));
    const y = v128.bitselect(f32x4.mul(x, uu), f32x4.mul(t, uu), f32x4.ge(x, hi));
    v128.store(out + p, v128.andnot(y, f32x4.le(x, lo)));
  }
  for (; i < n; i++) {
    const p = <usize>i << 2;
    const x = load<f32>(g + p);
    let y: f32 = 0;
    if (x <= -10) y = 0;
    else if (x >= 10) y = x * load<f32>(u + p);
    else y = load<f32>(table + (<usize>f32ToF16(x) << 2)) * load<f32>(u + p);
    store<f32>(out + p, y);
  }
}
