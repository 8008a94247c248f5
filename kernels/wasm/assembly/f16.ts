// deno-fmt-ignore-file
// deno-lint-ignore-file
// @ts-nocheck: AssemblyScript, not TypeScript (v128, i32, @inline …); compiled by ../build.ts
// f16 <-> f32 conversions shared by the kernel files (index.ts, arch_ops.ts), as ggml computes them.

/**
 * f16 bits -> f32 (ggml_compute_fp16_to_fp32): no intermediate is ever a denormal float. (Scaling
 * the shifted bits by 2^112 makes one out of every subnormal f16, and x86 takes a ~100-cycle
 * microcode assist on each: K-quant super-block scales are often subnormal f16, which made whole
 * matmuls 3x slower on some tensors.)
 */
@inline export function f16ToF32(h: u32): f32 {
  const w = h << 16;
  const twoW = w + w;
  const normalized = reinterpret<f32>((twoW >> 4) + (0xe0 << 23)) * 1.925929944387236e-34; // 2^-112
  const denormalized = reinterpret<f32>((twoW >> 17) | (126 << 23)) - 0.5;
  const bits = twoW < (1 << 27) ? reinterpret<u32>(denormalized) : reinterpret<u32>(normalized);
  return reinterpret<f32>((w & 0x80000000) | bits);
}

/** f16ToF32 on 4 lanes of u32 (each holding f16 bits). */
@inline export function halvesToF32(h: v128): v128 {
  const w = i32x4.shl(h, 16);
  const twoW = i32x4.add(w, w);
  const normalized = f32x4.mul(
    i32x4.add(i32x4.shr_u(twoW, 4), i32x4.splat(0xe0 << 23)),
    f32x4.splat(1.925929944387236e-34),
  );
  const denormalized = f32x4.sub(
    v128.or(i32x4.shr_u(twoW, 17), i32x4.splat(126 << 23)),
    f32x4.splat(0.5),
  );
  const bits = v128.bitselect(denormalized, normalized, i32x4.lt_u(twoW, i32x4.splat(1 << 27)));
  return v128.or(v128.and(w, i32x4.splat(0x80000000)), bits);
}

/** ggml_compute_fp32_to_fp16 (round to nearest even). */
@inline export function f32ToF16(f: f32): u32 {
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
  const nonsign = expBits + mantBits;
  return (sign >> 16) | (shl1w > 0xff000000 ? 0x7e00 : nonsign);
}

/** f32ToF16 on 4 lanes: the same arithmetic, lane by lane; f16 bits in u32 lanes. */
@inline export function f32ToF16x4(f: v128): v128 {
  let base = f32x4.mul(
    f32x4.mul(f32x4.abs(f), f32x4.splat(5.192296858534828e33)),
    f32x4.splat(7.703719777548943e-34),
  );
  const shl1w = i32x4.add(f, f);
  const sign = v128.and(f, i32x4.splat(0x80000000));
  const bias = i32x4.max_u(v128.and(shl1w, i32x4.splat(0xff000000)), i32x4.splat(0x71000000));
  base = f32x4.add(i32x4.add(i32x4.shr_u(bias, 1), i32x4.splat(0x07800000)), base);
  const expBits = v128.and(i32x4.shr_u(base, 13), i32x4.splat(0x00007c00));
  const mantBits = v128.and(base, i32x4.splat(0x00000fff));
  const nonsign = i32x4.add(expBits, mantBits);
  const nan = i32x4.gt_u(shl1w, i32x4.splat(0xff000000));
  return v128.or(i32x4.shr_u(sign, 16), v128.bitselect(i32x4.splat(0x7e00), nonsign, nan));
}
