// deno-fmt-ignore-file
// deno-lint-ignore-file
// @ts-nocheck: AssemblyScript, not TypeScript (v128, i32, @inline …); compiled by ../build.ts
// AssemblyScript SIMD kernels of the WASM backend. Compiled by ../build.ts into build/kernels.wasm.
//
// Memory is imported (shared) and managed by the host (../arena.ts): every function takes byte
// addresses. Nothing here allocates. Numerics follow ggml's plain C CPU path (ggml-cpu/quants.c
// `*_generic`, ggml-quants.c `quantize_row_*_ref`): integer dot products are exact whatever the
// SIMD grouping, and every float step is replayed in the same order, lane by lane, so quantized
// matmuls are bit-identical to the reference backend. f32/f16/bf16 dot products sum their
// products in double, element by element, as ggml's scalar code does: bit-identical as well.
//
// Activation layouts (host-chosen, not ggml's block structs):
// - 32-element formats (Q8_0, Q8_1): qs [T × nb × 32] i8, d [T × nb] f32 (the f16-rounded scale),
//   s [T × nb] f32 (Q8_1: fp16(Σq·d); Q8_0: Σq as an integer i32, used by the nibble kernels).
// - Q8_K: qs [T × nbK × 256] i8, d [T × nbK] f32, bsums [T × nbK × 16] i32.
// - F16/BF16: the activation rounded to f16/bf16 precision, stored as f32 [T × n].

// ----------------------------------------------------------------------------- helpers

/** Lowest address the host may use (everything below holds this module's static data). */
export function heapBase(): usize {
  return __heap_base;
}

// @ts-ignore: AssemblyScript resolves the extension itself
import { f16ToF32, f32ToF16, halvesToF32 } from "./f16";

// Vector constants the hot loops read from memory once per call: V8 rematerializes a v128
// constant at every use (a 64-bit immediate load, a move and a broadcast before each vpand),
// while a loaded value stays in a register. Bytes: 16 × 0x0f, then 16 × 0x30.
const CONSTS: usize = memory.data<u8>([
  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
  48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48,
  1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0,
], 16);
// The i32/f32 lanes of halvesToF32C: 0xe0 << 23, 2^-112, 126 << 23, 0.5, 1 << 27, 0x80000000.
const CONSTS_F16: usize = memory.data<i32>([
  0x70000000, 0x70000000, 0x70000000, 0x70000000,
  0x07800000, 0x07800000, 0x07800000, 0x07800000,
  0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000,
  0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000,
  0x08000000, 0x08000000, 0x08000000, 0x08000000,
  -2147483648, -2147483648, -2147483648, -2147483648,
  0x8000, 0x8000, 0x8000, 0x8000, // scalesToF32: sign, magnitude, 2^112
  0x7fff, 0x7fff, 0x7fff, 0x7fff,
  0x77800000, 0x77800000, 0x77800000, 0x77800000,
], 16);

/** halvesToF32 (f16.ts) with its constants read from CONSTS_F16 (see CONSTS). */
@inline function halvesToF32C(h: v128): v128 {
  const w = i32x4.shl(h, 16);
  const twoW = i32x4.add(w, w);
  const normalized = f32x4.mul(
    i32x4.add(i32x4.shr_u(twoW, 4), v128.load(CONSTS_F16)),
    v128.load(CONSTS_F16 + 16),
  );
  const denormalized = f32x4.sub(
    v128.or(i32x4.shr_u(twoW, 17), v128.load(CONSTS_F16 + 32)),
    v128.load(CONSTS_F16 + 48),
  );
  const bits = v128.bitselect(denormalized, normalized, i32x4.lt_u(twoW, v128.load(CONSTS_F16 + 64)));
  return v128.or(v128.and(w, v128.load(CONSTS_F16 + 80)), bits);
}
/** 16 × 0x0f, as a value (see CONSTS). */
@inline function mask4(): v128 {
  return v128.load(CONSTS);
}
/** 8 × i16 1 (pmaddwd's widening of i16 pairs), as a value (see CONSTS). */
@inline function ones16(): v128 {
  return v128.load(CONSTS + 32);
}
/** 16 × 0x30, as a value (see CONSTS). */
@inline function mask30(): v128 {
  return v128.load(CONSTS + 16);
}

@inline function bf16Round(f: f32): f32 {
  const u = reinterpret<u32>(f);
  if ((u & 0x7fffffff) > 0x7f800000) return reinterpret<f32>((u | 0x00400000) & 0xffff0000);
  return reinterpret<f32>(((u + (0x7fff + ((u >> 16) & 1))) >> 16) << 16);
}

/** C roundf: half away from zero. */
@inline function roundf(v: f32): f32 {
  const t = trunc<f32>(v);
  return abs<f32>(v - t) >= 0.5 ? t + copysign<f32>(1, v) : t;
}

/** roundf on 4 lanes, as i32x4 (values here are within ±127). */
@inline function roundfx4(v: v128): v128 {
  const t = f32x4.trunc(v);
  const half = f32x4.ge(f32x4.abs(f32x4.sub(v, t)), f32x4.splat(0.5));
  const one = v128.or(v128.and(v, i32x4.splat(0x80000000)), f32x4.splat(1));
  return i32x4.trunc_sat_f32x4_s(f32x4.add(t, v128.and(one, half)));
}

@inline function f16At(p: usize): f32 {
  return f16ToF32(<u32> load<u16>(p));
}

// 4 i32x4 partial sums (one per weight row) -> [Σa, Σb, Σc, Σd]
@inline function transposeSum(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.add(v128.shuffle<i32>(a, b, 0, 4, 1, 5), v128.shuffle<i32>(a, b, 2, 6, 3, 7));
  const cd = i32x4.add(v128.shuffle<i32>(c, d, 0, 4, 1, 5), v128.shuffle<i32>(c, d, 2, 6, 3, 7));
  return i32x4.add(v128.shuffle<i32>(ab, cd, 0, 1, 4, 5), v128.shuffle<i32>(ab, cd, 2, 3, 6, 7));
}

@inline function hsumI32(v: v128): i32 {
  return i32x4.extract_lane(v, 0) + i32x4.extract_lane(v, 1) + i32x4.extract_lane(v, 2) +
    i32x4.extract_lane(v, 3);
}

// ----------------------------------------------------------------------------- activations

/**
 * quantize_row_q8_0_ref / q8_1_ref of T rows of n floats into the host layout (see top); with
 * pn ≠ 0 also the Q8_0 kernel's form of the activation: the P/N planes [T × nb × (32 P + 32 N)]
 * u8, or with `biased` (mmQ8_0b, and mmQ4_0 on every engine) the rows of their tiles in groups
 * of 4 (see Q8G).
 */
export function quantizeQ8(
  x: usize,
  n: i32,
  T: i32,
  qs: usize,
  d: usize,
  s: usize,
  q81: bool,
  pn: usize,
  biased: bool,
): void {
  const nb = n >> 5;
  const zero = i8x16.splat(0);
  const tiled = tiledRows(T);
  const grouped = groupedRows(T);
  for (let t = 0; t < T; t++) {
    for (let b = 0; b < nb; b++) {
      const xb = x + ((<usize> (t * n + b * 32)) << 2);
      let m = f32x4.splat(0);
      for (let j = 0; j < 32; j += 4) m = f32x4.max(m, f32x4.abs(v128.load(xb + (<usize> j << 2))));
      const amax = max<f32>(
        max<f32>(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1)),
        max<f32>(f32x4.extract_lane(m, 2), f32x4.extract_lane(m, 3)),
      );
      const dd: f32 = amax / 127;
      const id: f32 = dd != 0 ? <f32> 1 / dd : 0;
      const qb = qs + <usize> ((t * nb + b) * 32);
      // roundf (half away from zero) of x·id, 4 lanes at a time
      const idv = f32x4.splat(id);
      let acc = i32x4.splat(0);
      for (let j = 0; j < 32; j += 16) {
        const q0 = roundfx4(f32x4.mul(v128.load(xb + (<usize> j << 2)), idv));
        const q1 = roundfx4(f32x4.mul(v128.load(xb + (<usize> (j + 4) << 2)), idv));
        const q2 = roundfx4(f32x4.mul(v128.load(xb + (<usize> (j + 8) << 2)), idv));
        const q3 = roundfx4(f32x4.mul(v128.load(xb + (<usize> (j + 12) << 2)), idv));
        acc = i32x4.add(acc, i32x4.add(i32x4.add(q0, q1), i32x4.add(q2, q3)));
        const q = i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3));
        v128.store(qb + j, q);
        if (pn && biased) {
          // the rows of 8-row tiles also into their group (see Q8G): quad k at 16k + 4(t & 3)
          if (t < grouped) {
            const gq = pn + <usize> ((t >> 2) * nb + b) * Q8G + (<usize> (t & 3) << 2) + (<usize> j << 2);
            store<i32>(gq, i32x4.extract_lane(q, 0));
            store<i32>(gq + 16, i32x4.extract_lane(q, 1));
            store<i32>(gq + 32, i32x4.extract_lane(q, 2));
            store<i32>(gq + 48, i32x4.extract_lane(q, 3));
          }
        } else if (pn) {
          // P/N planes for the Q8_0 kernel (|q| ≤ 127, so both fit the relaxed dot's 7 bits)
          const pb = pn + (<usize> (t * nb + b) << 6) + j;
          v128.store(pb, i8x16.max_s(q, zero));
          v128.store(pb + 32, i8x16.max_s(i8x16.neg(q), zero));
        }
      }
      const sum = hsumI32(acc);
      const bi = <usize> (t * nb + b) << 2;
      store<f32>(d + bi, f16ToF32(f32ToF16(dd)));
      if (pn && biased && t < grouped) {
        const gs = pn + <usize> ((t >> 2) * nb + b) * Q8G + (<usize> (t & 3) << 2);
        store<f32>(gs + 128, f16ToF32(f32ToF16(dd)));
        // Q8_0: the sums' correction −128Σq (Q8G); Q8_1: the row's float sum, as s below
        if (q81) store<f32>(gs + 144, f16ToF32(f32ToF16(<f32> sum * dd)));
        else store<i32>(gs + 144, -(sum << 7));
      }
      if (q81) store<f32>(s + bi, f16ToF32(f32ToF16(<f32> sum * dd)));
      else store<i32>(s + bi, sum);
    }
  }
  if (pn && biased) {
    // a last, padded tile: its missing rows all zero (their sums 0, never stored)
    for (let t = T; t < max<i32>(tiled, grouped); t++) {
      for (let b = 0; b < nb; b++) {
        const g = pn + <usize> ((t >> 2) * nb + b) * Q8G + (<usize> (t & 3) << 2);
        for (let k: usize = 0; k < 160; k += 16) store<i32>(g + k, 0);
      }
    }
  }
}

/**
 * quantize_row_q8_K_ref of T rows of n floats into the host layout (see top), 4 lanes at a time:
 * the same max (the first element of largest magnitude), nearest (round half to even) and sums.
 */
export function quantizeQ8K(x: usize, n: i32, T: i32, qs: usize, d: usize, bsums: usize): void {
  const nb = n >> 8;
  for (let t = 0; t < T; t++) {
    for (let b = 0; b < nb; b++) {
      const blk = t * nb + b;
      const xb = x + ((<usize> (t * n + b * 256)) << 2);
      const qb = qs + (<usize> blk << 8);
      const sb = bsums + (<usize> blk << 6);
      let m = f32x4.splat(0);
      for (let j = 0; j < 256; j += 4) m = f32x4.max(m, f32x4.abs(v128.load(xb + (<usize> j << 2))));
      const amax = max<f32>(
        max<f32>(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1)),
        max<f32>(f32x4.extract_lane(m, 2), f32x4.extract_lane(m, 3)),
      );
      if (amax == 0) {
        memory.fill(qb, 0, 256);
        memory.fill(sb, 0, 64);
        store<f32>(d + (<usize> blk << 2), 0);
        continue;
      }
      // mx: the first element whose magnitude is amax (the scalar scan keeps the first)
      const av = f32x4.splat(amax);
      let j0 = 0;
      for (; j0 < 256; j0 += 4) {
        if (v128.any_true(f32x4.eq(f32x4.abs(v128.load(xb + (<usize> j0 << 2))), av))) break;
      }
      while (abs<f32>(load<f32>(xb + (<usize> j0 << 2))) != amax) j0++;
      const mx = load<f32>(xb + (<usize> j0 << 2));
      const iscale: f32 = <f32> -127 / mx;
      const iv = f32x4.splat(iscale);
      const lim = i32x4.splat(127);
      for (let j = 0; j < 256; j += 16) {
        const p = xb + (<usize> j << 2);
        const q0 = i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(iv, v128.load(p)))), lim);
        const q1 = i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(iv, v128.load(p + 16)))), lim);
        const q2 = i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(iv, v128.load(p + 32)))), lim);
        const q3 = i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(iv, v128.load(p + 48)))), lim);
        v128.store(qb + j, i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3)));
        store<i32>(sb + (<usize> (j >> 4) << 2), hsumI32(i32x4.add(i32x4.add(q0, q1), i32x4.add(q2, q3))));
      }
      store<f32>(d + (<usize> blk << 2), <f32> 1 / iscale);
    }
  }
}

/** Round n floats to f16 (mode 1) or bf16 (mode 2) precision, x -> y. */
export function roundActs(x: usize, y: usize, n: i32, mode: i32): void {
  if (mode == 1) {
    for (let i = 0; i < n; i++) {
      const p = <usize> i << 2;
      store<f32>(y + p, f16ToF32(f32ToF16(load<f32>(x + p))));
    }
  } else {
    for (let i = 0; i < n; i++) {
      const p = <usize> i << 2;
      store<f32>(y + p, bf16Round(load<f32>(x + p)));
    }
  }
}

// ----------------------------------------------------------------------------- 32-block matmuls

// 32 high bits -> two byte masks with 0x10 where the bit is set (elements 0..15, 16..31)
@inline function highBits(qh: u32, which: i32): v128 {
  const v = i32x4.splat(<i32> qh);
  const idx = which == 0
    ? i8x16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
    : i8x16(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const bits = i8x16(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
  const b = v128.and(i8x16.swizzle(v, idx), bits);
  return v128.and(i8x16.eq(b, bits), i8x16.splat(0x10));
}

@inline function blockBytes(kind: i32): i32 {
  return kind == 8 || kind == 9 ? 34 : kind == 2 ? 18 : kind == 3 ? 20 : kind == 6 ? 22 : 24;
}

@inline function rowScales(w0: usize, w1: usize, w2: usize, w3: usize, off: usize): v128 {
  // gather the 4 rows' f16 scales into one vector, widen all 4 at once (exact, as f16At)
  let v = v128.load16_splat(w0 + off);
  v = v128.load16_lane(w1 + off, v, 1);
  v = v128.load16_lane(w2 + off, v, 2);
  v = v128.load16_lane(w3 + off, v, 3);
  return scalesToF32(i32x4.extend_low_i16x8_u(v));
}

/**
 * Block scales of the 32-element formats, f16 bits in 4 u32 lanes -> f32: the shift-and-scale
 * trick, 2 instructions shorter than halvesToF32 on this hot path. It passes through a denormal
 * float (slow on x86, exact all the same) only for scales below 2^-14, which Q8_0 / Q4_0 blocks
 * reach only when all 32 weights are below ~0.008 / ~0.0005.
 */
@inline function scalesToF32(h: v128): v128 {
  // constants from static memory (see CONSTS)
  const sign = i32x4.shl(v128.and(h, v128.load(CONSTS_F16 + 96)), 16);
  const mag = i32x4.shl(v128.and(h, v128.load(CONSTS_F16 + 112)), 13);
  return v128.or(f32x4.mul(mag, v128.load(CONSTS_F16 + 128)), sign);
}

// 32-element-block matmuls. Lanes are 4 weight rows; for each activation row t the sums of the
// 4 rows stay in one register through all blocks, in ggml's order (block by block), so nothing
// round-trips through memory in the inner loop and a row group's weights (4 rows, ≤ 9 KB) are
// re-read from L1 for the next t. Integer dot products use the relaxed (VNNI) dot, whose second
// operand must be 0..127:
// - nibble formats (Q4_0/Q4_1/Q5_0/Q5_1): the 4/5-bit quants are that operand, the signed
//   activation quants the first;
// - Q8_0: both are signed, so the activation comes split as P = max(q, 0) and N = max(-q, 0)
//   (made once per activation by quantizeQ8) and Σw·q = dot(w, P) - dot(w, N), exact (kind 8);
//   or, where the engine's dot reads bytes above 127 as unsigned without saturating (the host
//   probes it: relaxedDot), the weights stored biased, w + 128, and Σw·q = dot(q, w + 128) −
//   128·Σq (kind 9, mmQ8_0b, see Q8G: here only a matrix's rows after its full groups, which are
//   byte quads, quadMatmul).

// Nibble (+ 5th bit) planes of a 4/5-bit block: lo = elements 0..15, hi = 16..31.
@inline function nibLo(kind: i32, w: usize): v128 {
  const m = i8x16.splat(0x0f);
  if (kind == 2) return v128.and(v128.load(w + 2), m);
  if (kind == 3) return v128.and(v128.load(w + 4), m);
  if (kind == 6) return v128.or(v128.and(v128.load(w + 6), m), highBits(load<u32>(w + 2), 0));
  return v128.or(v128.and(v128.load(w + 8), m), highBits(load<u32>(w + 4), 0));
}
@inline function nibHi(kind: i32, w: usize): v128 {
  if (kind == 2) return i8x16.shr_u(v128.load(w + 2), 4);
  if (kind == 3) return i8x16.shr_u(v128.load(w + 4), 4);
  if (kind == 6) return v128.or(i8x16.shr_u(v128.load(w + 6), 4), highBits(load<u32>(w + 2), 1));
  return v128.or(i8x16.shr_u(v128.load(w + 8), 4), highBits(load<u32>(w + 4), 1));
}

// Σ over one block of one weight row, as 4 i32 lanes (their sum is the block's integer dot).
@inline function rowBlock(kind: i32, wr: usize, a: usize, p0: v128, p1: v128, n0: v128, n1: v128): v128 {
  const z = i32x4.splat(0);
  if (kind == 9) {
    // the signed activation against the flipped weights (w + 128, see Q8G): Σw·q + 128Σq
    return i32x4.relaxed_dot_i8x16_i7x16_add_s(p1, v128.load(wr + 18),
      i32x4.relaxed_dot_i8x16_i7x16_add_s(p0, v128.load(wr + 2), z));
  }
  if (kind == 8) {
    // Σw·P − Σw·N
    const w0 = v128.load(wr + 2);
    const w1 = v128.load(wr + 18);
    const p = i32x4.relaxed_dot_i8x16_i7x16_add_s(w1, p1, i32x4.relaxed_dot_i8x16_i7x16_add_s(w0, p0, z));
    const n = i32x4.relaxed_dot_i8x16_i7x16_add_s(w1, n1, i32x4.relaxed_dot_i8x16_i7x16_add_s(w0, n0, z));
    return i32x4.sub(p, n);
  }
  return i32x4.relaxed_dot_i8x16_i7x16_add_s(p1, nibHi(kind, wr),
    i32x4.relaxed_dot_i8x16_i7x16_add_s(p0, nibLo(kind, wr), z));
}

// One activation row's Q8_0 block against 4 rows' weights (w<row><half>), lanes = rows:
// sumf + Σ(w·P − w·N) · (xd · yd), in ggml's float order.
@inline function q8Step(
  sumf: v128, pa: usize, w00: v128, w01: v128, w10: v128, w11: v128, w20: v128, w21: v128,
  w30: v128, w31: v128, xd: v128, yd: f32,
): v128 {
  const p0 = v128.load(pa);
  const p1 = v128.load(pa + 16);
  const n0 = v128.load(pa + 32);
  const n1 = v128.load(pa + 48);
  const z = i32x4.splat(0);
  const s0 = i32x4.sub(
    i32x4.relaxed_dot_i8x16_i7x16_add_s(w01, p1, i32x4.relaxed_dot_i8x16_i7x16_add_s(w00, p0, z)),
    i32x4.relaxed_dot_i8x16_i7x16_add_s(w01, n1, i32x4.relaxed_dot_i8x16_i7x16_add_s(w00, n0, z)));
  const s1 = i32x4.sub(
    i32x4.relaxed_dot_i8x16_i7x16_add_s(w11, p1, i32x4.relaxed_dot_i8x16_i7x16_add_s(w10, p0, z)),
    i32x4.relaxed_dot_i8x16_i7x16_add_s(w11, n1, i32x4.relaxed_dot_i8x16_i7x16_add_s(w10, n0, z)));
  const s2 = i32x4.sub(
    i32x4.relaxed_dot_i8x16_i7x16_add_s(w21, p1, i32x4.relaxed_dot_i8x16_i7x16_add_s(w20, p0, z)),
    i32x4.relaxed_dot_i8x16_i7x16_add_s(w21, n1, i32x4.relaxed_dot_i8x16_i7x16_add_s(w20, n0, z)));
  const s3 = i32x4.sub(
    i32x4.relaxed_dot_i8x16_i7x16_add_s(w31, p1, i32x4.relaxed_dot_i8x16_i7x16_add_s(w30, p0, z)),
    i32x4.relaxed_dot_i8x16_i7x16_add_s(w31, n1, i32x4.relaxed_dot_i8x16_i7x16_add_s(w30, n0, z)));
  const sumi = transposeSum(s0, s1, s2, s3);
  return f32x4.add(sumf, f32x4.mul(f32x4.convert_i32x4_s(sumi), f32x4.mul(xd, f32x4.splat(yd))));
}

// Store the first min(4, n) lanes of v at p.
@inline function storeLanes(p: usize, v: v128, n: i32): void {
  if (n >= 4) {
    v128.store(p, v);
  } else {
    store<f32>(p, f32x4.extract_lane(v, 0));
    if (n > 1) store<f32>(p + 4, f32x4.extract_lane(v, 1));
    if (n > 2) store<f32>(p + 8, f32x4.extract_lane(v, 2));
  }
}

// One block of an activation row (its quants at qa) against 4 rows' unpacked nibble planes
// (l, h: elements 0..15, 16..31), lanes = rows: the block's integer dots, as rowBlock's.
@inline function nibDots(qa: usize, l0: v128, h0: v128, l1: v128, h1: v128, l2: v128, h2: v128, l3: v128, h3: v128): v128 {
  const p0 = v128.load(qa);
  const p1 = v128.load(qa + 16);
  const z = i32x4.splat(0);
  return transposeSum(
    i32x4.relaxed_dot_i8x16_i7x16_add_s(p1, h0, i32x4.relaxed_dot_i8x16_i7x16_add_s(p0, l0, z)),
    i32x4.relaxed_dot_i8x16_i7x16_add_s(p1, h1, i32x4.relaxed_dot_i8x16_i7x16_add_s(p0, l1, z)),
    i32x4.relaxed_dot_i8x16_i7x16_add_s(p1, h2, i32x4.relaxed_dot_i8x16_i7x16_add_s(p0, l2, z)),
    i32x4.relaxed_dot_i8x16_i7x16_add_s(p1, h3, i32x4.relaxed_dot_i8x16_i7x16_add_s(p0, l3, z)),
  );
}

// sumf plus one block's float step (ggml's, per format) for the block's integer dots sumi (lanes
// = rows) with the rows' scales xd (and mins xm: Q4_1, Q5_1), activation block ab's scale (ad) and
// sum (as).
@inline function blockStep(kind: i32, sumf: v128, sumi: v128, xd: v128, xm: v128, ad: usize, as: usize, ab: usize): v128 {
  const yd = f32x4.splat(load<f32>(ad + (ab << 2)));
  if (kind == 8 || kind == 9) {
    // sumi * (xd * yd)
    return f32x4.add(sumf, f32x4.mul(f32x4.convert_i32x4_s(sumi), f32x4.mul(xd, yd)));
  }
  if (kind == 2) {
    // (sumi - 8Σa) * xd * yd
    const s = i32x4.sub(sumi, i32x4.splat(load<i32>(as + (ab << 2)) << 3));
    return f32x4.add(sumf, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(s), xd), yd));
  }
  if (kind == 6) {
    // (xd * yd) * (sumi - 16Σa)
    const s = i32x4.sub(sumi, i32x4.splat(load<i32>(as + (ab << 2)) << 4));
    return f32x4.add(sumf, f32x4.mul(f32x4.mul(xd, yd), f32x4.convert_i32x4_s(s)));
  }
  // (xd * yd) * sumi + xm * ys
  const ys = f32x4.splat(load<f32>(as + (ab << 2)));
  const p = f32x4.mul(f32x4.mul(xd, yd), f32x4.convert_i32x4_s(sumi));
  return f32x4.add(sumf, f32x4.add(p, f32x4.mul(xm, ys)));
}

@inline function matmul32(
  kind: i32,
  w: usize,
  rowBytes: i32,
  nb: i32,
  aq: usize,
  ad: usize,
  as: usize,
  T: i32,
  out: usize,
  outStride: i32,
  r0: i32,
  r1: i32,
): void {
  const bb = blockBytes(kind);
  for (let r = r0; r < r1; r += 4) {
    let wr0: usize, wr1: usize, wr2: usize, wr3: usize, stride: i32;
    if (r + 4 <= r1) {
      // a full group, interleaved by repack4: block b of its row i at (4b + i)·bb
      wr0 = w + <usize> r * rowBytes;
      wr1 = wr0 + <usize> bb;
      wr2 = wr1 + <usize> bb;
      wr3 = wr2 + <usize> bb;
      stride = 4 * bb;
    } else {
      // the last partial group (row-major) repeats its last row in the missing lanes
      wr0 = w + <usize> r * rowBytes;
      wr1 = w + <usize> min<i32>(r + 1, r1 - 1) * rowBytes;
      wr2 = w + <usize> min<i32>(r + 2, r1 - 1) * rowBytes;
      wr3 = w + <usize> min<i32>(r + 3, r1 - 1) * rowBytes;
      stride = bb;
    }
    let t0 = 0;
    if (kind == 8) {
      // prompts: four activation rows per pass share each block's weights and scales
      for (; t0 + 4 <= T; t0 += 4) {
        let sa = f32x4.splat(0);
        let sb = f32x4.splat(0);
        let sc = f32x4.splat(0);
        let sd = f32x4.splat(0);
        for (let b = 0; b < nb; b++) {
          const o = <usize> (b * stride);
          const ia = <usize> (t0 * nb + b);
          const ib = ia + <usize> nb;
          const ic = ib + <usize> nb;
          const id = ic + <usize> nb;
          const xd = rowScales(wr0, wr1, wr2, wr3, o);
          const w00 = v128.load(wr0 + o + 2);
          const w01 = v128.load(wr0 + o + 18);
          const w10 = v128.load(wr1 + o + 2);
          const w11 = v128.load(wr1 + o + 18);
          const w20 = v128.load(wr2 + o + 2);
          const w21 = v128.load(wr2 + o + 18);
          const w30 = v128.load(wr3 + o + 2);
          const w31 = v128.load(wr3 + o + 18);
          sa = q8Step(sa, as + (ia << 6), w00, w01, w10, w11, w20, w21, w30, w31, xd, load<f32>(ad + (ia << 2)));
          sb = q8Step(sb, as + (ib << 6), w00, w01, w10, w11, w20, w21, w30, w31, xd, load<f32>(ad + (ib << 2)));
          sc = q8Step(sc, as + (ic << 6), w00, w01, w10, w11, w20, w21, w30, w31, xd, load<f32>(ad + (ic << 2)));
          sd = q8Step(sd, as + (id << 6), w00, w01, w10, w11, w20, w21, w30, w31, xd, load<f32>(ad + (id << 2)));
        }
        storeLanes(out + (<usize> (t0 * outStride + r) << 2), sa, r1 - r);
        storeLanes(out + (<usize> ((t0 + 1) * outStride + r) << 2), sb, r1 - r);
        storeLanes(out + (<usize> ((t0 + 2) * outStride + r) << 2), sc, r1 - r);
        storeLanes(out + (<usize> ((t0 + 3) * outStride + r) << 2), sd, r1 - r);
      }
    } else if (kind == 3 || kind == 6 || kind == 7) {
      // prompts: four activation rows per pass share each block's unpacked nibbles (and 5th
      // bits) and scales; unpacked per row, they cost Q5_0's prompts 7× llama.cpp's time. (Only
      // a matrix's last rows outside its 4-row groups come here now: the groups take
      // nibbleMatmul.)
      for (; t0 + 4 <= T; t0 += 4) {
        let sa = f32x4.splat(0);
        let sb = f32x4.splat(0);
        let sc = f32x4.splat(0);
        let sd = f32x4.splat(0);
        for (let b = 0; b < nb; b++) {
          const o = <usize> (b * stride);
          const l0 = nibLo(kind, wr0 + o), h0 = nibHi(kind, wr0 + o);
          const l1 = nibLo(kind, wr1 + o), h1 = nibHi(kind, wr1 + o);
          const l2 = nibLo(kind, wr2 + o), h2 = nibHi(kind, wr2 + o);
          const l3 = nibLo(kind, wr3 + o), h3 = nibHi(kind, wr3 + o);
          const xd = rowScales(wr0, wr1, wr2, wr3, o);
          const xm = kind == 6 ? xd : rowScales(wr0, wr1, wr2, wr3, o + 2);
          const ia = <usize> (t0 * nb + b);
          sa = blockStep(kind, sa, nibDots(aq + (ia << 5), l0, h0, l1, h1, l2, h2, l3, h3), xd, xm, ad, as, ia);
          const ib = ia + <usize> nb;
          sb = blockStep(kind, sb, nibDots(aq + (ib << 5), l0, h0, l1, h1, l2, h2, l3, h3), xd, xm, ad, as, ib);
          const ic = ib + <usize> nb;
          sc = blockStep(kind, sc, nibDots(aq + (ic << 5), l0, h0, l1, h1, l2, h2, l3, h3), xd, xm, ad, as, ic);
          const id = ic + <usize> nb;
          sd = blockStep(kind, sd, nibDots(aq + (id << 5), l0, h0, l1, h1, l2, h2, l3, h3), xd, xm, ad, as, id);
        }
        storeLanes(out + (<usize> (t0 * outStride + r) << 2), sa, r1 - r);
        storeLanes(out + (<usize> ((t0 + 1) * outStride + r) << 2), sb, r1 - r);
        storeLanes(out + (<usize> ((t0 + 2) * outStride + r) << 2), sc, r1 - r);
        storeLanes(out + (<usize> ((t0 + 3) * outStride + r) << 2), sd, r1 - r);
      }
    }
    for (let t = t0; t < T; t++) {
      let sumf = f32x4.splat(0);
      const tb = <usize> (t * nb);
      for (let b = 0; b < nb; b++) {
        const o = <usize> (b * stride);
        const ab = tb + <usize> b;
        let p0: v128, p1: v128, n0: v128, n1: v128;
        if (kind == 8) {
          const pa = as + (ab << 6);
          p0 = v128.load(pa);
          p1 = v128.load(pa + 16);
          n0 = v128.load(pa + 32);
          n1 = v128.load(pa + 48);
        } else {
          const pa = aq + (ab << 5);
          p0 = v128.load(pa);
          p1 = v128.load(pa + 16);
          n0 = p0;
          n1 = p1;
        }
        let sumi = transposeSum(
          rowBlock(kind, wr0 + o, 0, p0, p1, n0, n1),
          rowBlock(kind, wr1 + o, 0, p0, p1, n0, n1),
          rowBlock(kind, wr2 + o, 0, p0, p1, n0, n1),
          rowBlock(kind, wr3 + o, 0, p0, p1, n0, n1),
        );
        if (kind == 9) sumi = i32x4.add(sumi, q80Corr(as, ab));
        const xd = rowScales(wr0, wr1, wr2, wr3, o);
        const xm = kind == 3 || kind == 7 ? rowScales(wr0, wr1, wr2, wr3, o + 2) : xd;
        sumf = blockStep(kind, sumf, sumi, xd, xm, ad, as, ab);
      }
      storeLanes(out + (<usize> (t * outStride + r) << 2), sumf, r1 - r);
    }
  }
}

/**
 * Interleave each full group of 4 rows in place (nGroups groups from w): block b of row i moves to
 * (4b + i)·bb within its group, so a 4-row kernel step reads one sequential stream (4 separate
 * row streams reach half the memory bandwidth). tmp: 4·rowBytes of scratch.
 */
export function repack4(w: usize, rowBytes: i32, bb: i32, nGroups: i32, tmp: usize): void {
  const gbytes = <usize> rowBytes << 2;
  const nb = rowBytes / bb;
  for (let g = 0; g < nGroups; g++) {
    const base = w + <usize> g * gbytes;
    memory.copy(tmp, base, gbytes);
    for (let i = 0; i < 4; i++) {
      for (let b = 0; b < nb; b++) {
        memory.copy(base + <usize> ((4 * b + i) * bb), tmp + <usize> (i * rowBytes + b * bb), <usize> bb);
      }
    }
  }
}

/**
 * Q8_0 weights; `as` holds the activation split into P/N planes (quantizeQ8's pn), which only the
 * relaxed-dot form reads (where the dot is emulated, q80Matmul16 reads the plain quants in aq).
 */
export function mmQ8_0(
  w: usize,
  rb: i32,
  nb: i32,
  aq: usize,
  ad: usize,
  as: usize,
  T: i32,
  out: usize,
  os: i32,
  r0: i32,
  r1: i32,
): void {
  if (dotWidens()) q80Matmul16(w, rb, nb, aq, ad, T, out, os, r0, r1);
  else matmul32(8, w, rb, nb, aq, ad, as, T, out, os, r0, r1);
}

// Q8_0 where the engine emulates the relaxed dot (dotWidens): both operands sign-extended to i16
// as they are loaded (v128.load8x8_s, pmovsxbw from memory, as cheap as a plain load) and
// multiplied by the exact i16 dot (i32x4.dot_i16x8_s, pmaddwd): 8 products a pmaddwd + paddd,
// where the P/N planes take two emulated dots (10 instructions) per 16. It reads the plain
// activation quants (aq), not the planes; each weight row's 8 quants are widened once for two
// activation rows, and a block's 4 weight scales once for up to eight (8, 4, 2, 1 rows a pass).
// Widening the activation once into the planes' slot and loading it as i16 was tried: slower at
// 2-4 rows (twice the activation bytes in L1) and no faster above. Same exact integers, then
// ggml's float order, so the same bits as matmul32.
@noinline function q80Matmul16(
  w: usize, rowBytes: i32, nb: i32, aq: usize, ad: usize, T: i32, out: usize, outStride: i32,
  r0: i32, r1: i32,
): void {
  const bb: usize = 34;
  const rowQ = <usize> nb << 5;
  for (let r = r0; r < r1; r += 4) {
    let wr0: usize, wr1: usize, wr2: usize, wr3: usize, stride: usize;
    if (r + 4 <= r1) {
      // a full group (repack4): block b of its row i at (4b + i)·34
      wr0 = w + <usize> r * rowBytes;
      wr1 = wr0 + bb;
      wr2 = wr1 + bb;
      wr3 = wr2 + bb;
      stride = bb << 2;
    } else {
      // the last partial group (row-major) repeats its last row in the missing lanes
      wr0 = w + <usize> r * rowBytes;
      wr1 = w + <usize> min<i32>(r + 1, r1 - 1) * rowBytes;
      wr2 = w + <usize> min<i32>(r + 2, r1 - 1) * rowBytes;
      wr3 = w + <usize> min<i32>(r + 3, r1 - 1) * rowBytes;
      stride = bb;
    }
    let t = 0;
    // eight activation rows a pass, four pairs over each block in turn: the pairs share the
    // block's weight scales (rowScales) and its 4 weight rows stay in L1 from pair to pair; each
    // row keeps its own float sum, so the same bits (then 4 rows, 2, 1 for what is left)
    for (; t + 8 <= T; t += 8) {
      let s0 = f32x4.splat(0);
      let s1 = f32x4.splat(0);
      let s2 = f32x4.splat(0);
      let s3 = f32x4.splat(0);
      let s4 = f32x4.splat(0);
      let s5 = f32x4.splat(0);
      let s6 = f32x4.splat(0);
      let s7 = f32x4.splat(0);
      const xa0 = aq + <usize> t * rowQ;
      const da = ad + (<usize> (t * nb) << 2);
      for (let b = 0; b < nb; b++) {
        const o = <usize> b * stride + 2;
        const xa = xa0 + (<usize> b << 5);
        const xd = rowScales(wr0, wr1, wr2, wr3, o - 2);
        const db = da + (<usize> b << 2);
        {
          const xp = xa + <usize> 0 * rowQ;
          const xq = xa + <usize> 1 * rowQ;
          let x = v128.load8x8_s(xp);
          let y = v128.load8x8_s(xq);
          let v = v128.load8x8_s(wr0 + o);
          let a0 = i32x4.dot_i16x8_s(x, v);
          let b0 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr1 + o);
          let a1 = i32x4.dot_i16x8_s(x, v);
          let b1 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr2 + o);
          let a2 = i32x4.dot_i16x8_s(x, v);
          let b2 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr3 + o);
          let a3 = i32x4.dot_i16x8_s(x, v);
          let b3 = i32x4.dot_i16x8_s(y, v);
          x = v128.load8x8_s(xp + 8);
          y = v128.load8x8_s(xq + 8);
          v = v128.load8x8_s(wr0 + o + 8);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 8);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 8);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 8);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          x = v128.load8x8_s(xp + 16);
          y = v128.load8x8_s(xq + 16);
          v = v128.load8x8_s(wr0 + o + 16);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 16);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 16);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 16);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          x = v128.load8x8_s(xp + 24);
          y = v128.load8x8_s(xq + 24);
          v = v128.load8x8_s(wr0 + o + 24);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 24);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 24);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 24);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          const sumA = transposeSum(a0, a1, a2, a3);
          const sumB = transposeSum(b0, b1, b2, b3);
          s0 = f32x4.add(s0, f32x4.mul(f32x4.convert_i32x4_s(sumA), f32x4.mul(xd, f32x4.splat(load<f32>(db + (<usize> (0 * nb) << 2))))));
          s1 = f32x4.add(s1, f32x4.mul(f32x4.convert_i32x4_s(sumB), f32x4.mul(xd, f32x4.splat(load<f32>(db + (<usize> (1 * nb) << 2))))));
        }
        {
          const xp = xa + <usize> 2 * rowQ;
          const xq = xa + <usize> 3 * rowQ;
          let x = v128.load8x8_s(xp);
          let y = v128.load8x8_s(xq);
          let v = v128.load8x8_s(wr0 + o);
          let a0 = i32x4.dot_i16x8_s(x, v);
          let b0 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr1 + o);
          let a1 = i32x4.dot_i16x8_s(x, v);
          let b1 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr2 + o);
          let a2 = i32x4.dot_i16x8_s(x, v);
          let b2 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr3 + o);
          let a3 = i32x4.dot_i16x8_s(x, v);
          let b3 = i32x4.dot_i16x8_s(y, v);
          x = v128.load8x8_s(xp + 8);
          y = v128.load8x8_s(xq + 8);
          v = v128.load8x8_s(wr0 + o + 8);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 8);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 8);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 8);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          x = v128.load8x8_s(xp + 16);
          y = v128.load8x8_s(xq + 16);
          v = v128.load8x8_s(wr0 + o + 16);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 16);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 16);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 16);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          x = v128.load8x8_s(xp + 24);
          y = v128.load8x8_s(xq + 24);
          v = v128.load8x8_s(wr0 + o + 24);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 24);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 24);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 24);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          const sumA = transposeSum(a0, a1, a2, a3);
          const sumB = transposeSum(b0, b1, b2, b3);
          s2 = f32x4.add(s2, f32x4.mul(f32x4.convert_i32x4_s(sumA), f32x4.mul(xd, f32x4.splat(load<f32>(db + (<usize> (2 * nb) << 2))))));
          s3 = f32x4.add(s3, f32x4.mul(f32x4.convert_i32x4_s(sumB), f32x4.mul(xd, f32x4.splat(load<f32>(db + (<usize> (3 * nb) << 2))))));
        }
        {
          const xp = xa + <usize> 4 * rowQ;
          const xq = xa + <usize> 5 * rowQ;
          let x = v128.load8x8_s(xp);
          let y = v128.load8x8_s(xq);
          let v = v128.load8x8_s(wr0 + o);
          let a0 = i32x4.dot_i16x8_s(x, v);
          let b0 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr1 + o);
          let a1 = i32x4.dot_i16x8_s(x, v);
          let b1 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr2 + o);
          let a2 = i32x4.dot_i16x8_s(x, v);
          let b2 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr3 + o);
          let a3 = i32x4.dot_i16x8_s(x, v);
          let b3 = i32x4.dot_i16x8_s(y, v);
          x = v128.load8x8_s(xp + 8);
          y = v128.load8x8_s(xq + 8);
          v = v128.load8x8_s(wr0 + o + 8);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 8);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 8);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 8);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          x = v128.load8x8_s(xp + 16);
          y = v128.load8x8_s(xq + 16);
          v = v128.load8x8_s(wr0 + o + 16);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 16);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 16);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 16);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          x = v128.load8x8_s(xp + 24);
          y = v128.load8x8_s(xq + 24);
          v = v128.load8x8_s(wr0 + o + 24);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 24);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 24);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 24);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          const sumA = transposeSum(a0, a1, a2, a3);
          const sumB = transposeSum(b0, b1, b2, b3);
          s4 = f32x4.add(s4, f32x4.mul(f32x4.convert_i32x4_s(sumA), f32x4.mul(xd, f32x4.splat(load<f32>(db + (<usize> (4 * nb) << 2))))));
          s5 = f32x4.add(s5, f32x4.mul(f32x4.convert_i32x4_s(sumB), f32x4.mul(xd, f32x4.splat(load<f32>(db + (<usize> (5 * nb) << 2))))));
        }
        {
          const xp = xa + <usize> 6 * rowQ;
          const xq = xa + <usize> 7 * rowQ;
          let x = v128.load8x8_s(xp);
          let y = v128.load8x8_s(xq);
          let v = v128.load8x8_s(wr0 + o);
          let a0 = i32x4.dot_i16x8_s(x, v);
          let b0 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr1 + o);
          let a1 = i32x4.dot_i16x8_s(x, v);
          let b1 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr2 + o);
          let a2 = i32x4.dot_i16x8_s(x, v);
          let b2 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr3 + o);
          let a3 = i32x4.dot_i16x8_s(x, v);
          let b3 = i32x4.dot_i16x8_s(y, v);
          x = v128.load8x8_s(xp + 8);
          y = v128.load8x8_s(xq + 8);
          v = v128.load8x8_s(wr0 + o + 8);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 8);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 8);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 8);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          x = v128.load8x8_s(xp + 16);
          y = v128.load8x8_s(xq + 16);
          v = v128.load8x8_s(wr0 + o + 16);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 16);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 16);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 16);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          x = v128.load8x8_s(xp + 24);
          y = v128.load8x8_s(xq + 24);
          v = v128.load8x8_s(wr0 + o + 24);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 24);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 24);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 24);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          const sumA = transposeSum(a0, a1, a2, a3);
          const sumB = transposeSum(b0, b1, b2, b3);
          s6 = f32x4.add(s6, f32x4.mul(f32x4.convert_i32x4_s(sumA), f32x4.mul(xd, f32x4.splat(load<f32>(db + (<usize> (6 * nb) << 2))))));
          s7 = f32x4.add(s7, f32x4.mul(f32x4.convert_i32x4_s(sumB), f32x4.mul(xd, f32x4.splat(load<f32>(db + (<usize> (7 * nb) << 2))))));
        }
      }
      storeLanes(out + (<usize> ((t + 0) * outStride + r) << 2), s0, r1 - r);
      storeLanes(out + (<usize> ((t + 1) * outStride + r) << 2), s1, r1 - r);
      storeLanes(out + (<usize> ((t + 2) * outStride + r) << 2), s2, r1 - r);
      storeLanes(out + (<usize> ((t + 3) * outStride + r) << 2), s3, r1 - r);
      storeLanes(out + (<usize> ((t + 4) * outStride + r) << 2), s4, r1 - r);
      storeLanes(out + (<usize> ((t + 5) * outStride + r) << 2), s5, r1 - r);
      storeLanes(out + (<usize> ((t + 6) * outStride + r) << 2), s6, r1 - r);
      storeLanes(out + (<usize> ((t + 7) * outStride + r) << 2), s7, r1 - r);
    }
    for (; t + 4 <= T; t += 4) {
      let sa = f32x4.splat(0);
      let sb = f32x4.splat(0);
      let sc = f32x4.splat(0);
      let sd = f32x4.splat(0);
      const xa0 = aq + <usize> t * rowQ;
      const da = ad + (<usize> (t * nb) << 2);
      for (let b = 0; b < nb; b++) {
        const o = <usize> b * stride + 2;
        const xa = xa0 + (<usize> b << 5);
        const xd = rowScales(wr0, wr1, wr2, wr3, o - 2);
        const db = da + (<usize> b << 2);
        {
          const xp = xa;
          const xq = xa + rowQ;
          let x = v128.load8x8_s(xp);
          let y = v128.load8x8_s(xq);
          let v = v128.load8x8_s(wr0 + o);
          let a0 = i32x4.dot_i16x8_s(x, v);
          let b0 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr1 + o);
          let a1 = i32x4.dot_i16x8_s(x, v);
          let b1 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr2 + o);
          let a2 = i32x4.dot_i16x8_s(x, v);
          let b2 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr3 + o);
          let a3 = i32x4.dot_i16x8_s(x, v);
          let b3 = i32x4.dot_i16x8_s(y, v);
          x = v128.load8x8_s(xp + 8);
          y = v128.load8x8_s(xq + 8);
          v = v128.load8x8_s(wr0 + o + 8);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 8);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 8);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 8);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          x = v128.load8x8_s(xp + 16);
          y = v128.load8x8_s(xq + 16);
          v = v128.load8x8_s(wr0 + o + 16);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 16);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 16);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 16);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          x = v128.load8x8_s(xp + 24);
          y = v128.load8x8_s(xq + 24);
          v = v128.load8x8_s(wr0 + o + 24);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 24);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 24);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 24);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          const sumA = transposeSum(a0, a1, a2, a3);
          const sumB = transposeSum(b0, b1, b2, b3);
          sa = f32x4.add(sa, f32x4.mul(f32x4.convert_i32x4_s(sumA), f32x4.mul(xd, f32x4.splat(load<f32>(db)))));
          sb = f32x4.add(sb, f32x4.mul(f32x4.convert_i32x4_s(sumB), f32x4.mul(xd, f32x4.splat(load<f32>(db + (<usize> nb << 2))))));
        }
        {
          const xp = xa + 2 * rowQ;
          const xq = xa + 3 * rowQ;
          let x = v128.load8x8_s(xp);
          let y = v128.load8x8_s(xq);
          let v = v128.load8x8_s(wr0 + o);
          let a0 = i32x4.dot_i16x8_s(x, v);
          let b0 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr1 + o);
          let a1 = i32x4.dot_i16x8_s(x, v);
          let b1 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr2 + o);
          let a2 = i32x4.dot_i16x8_s(x, v);
          let b2 = i32x4.dot_i16x8_s(y, v);
          v = v128.load8x8_s(wr3 + o);
          let a3 = i32x4.dot_i16x8_s(x, v);
          let b3 = i32x4.dot_i16x8_s(y, v);
          x = v128.load8x8_s(xp + 8);
          y = v128.load8x8_s(xq + 8);
          v = v128.load8x8_s(wr0 + o + 8);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 8);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 8);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 8);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          x = v128.load8x8_s(xp + 16);
          y = v128.load8x8_s(xq + 16);
          v = v128.load8x8_s(wr0 + o + 16);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 16);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 16);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 16);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          x = v128.load8x8_s(xp + 24);
          y = v128.load8x8_s(xq + 24);
          v = v128.load8x8_s(wr0 + o + 24);
          a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
          b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr1 + o + 24);
          a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
          b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr2 + o + 24);
          a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
          b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
          v = v128.load8x8_s(wr3 + o + 24);
          a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
          b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
          const sumA = transposeSum(a0, a1, a2, a3);
          const sumB = transposeSum(b0, b1, b2, b3);
          sc = f32x4.add(sc, f32x4.mul(f32x4.convert_i32x4_s(sumA), f32x4.mul(xd, f32x4.splat(load<f32>(db + (<usize> nb << 3))))));
          sd = f32x4.add(sd, f32x4.mul(f32x4.convert_i32x4_s(sumB), f32x4.mul(xd, f32x4.splat(load<f32>(db + <usize> nb * 12)))));
        }
      }
      storeLanes(out + (<usize> (t * outStride + r) << 2), sa, r1 - r);
      storeLanes(out + (<usize> ((t + 1) * outStride + r) << 2), sb, r1 - r);
      storeLanes(out + (<usize> ((t + 2) * outStride + r) << 2), sc, r1 - r);
      storeLanes(out + (<usize> ((t + 3) * outStride + r) << 2), sd, r1 - r);
    }
    for (; t + 2 <= T; t += 2) {
      let sa = f32x4.splat(0);
      let sb = f32x4.splat(0);
      const xa0 = aq + <usize> t * rowQ;
      const xb0 = xa0 + rowQ;
      const da = ad + (<usize> (t * nb) << 2);
      const db = da + (<usize> nb << 2);
      for (let b = 0; b < nb; b++) {
        const o = <usize> b * stride + 2;
        const xa = xa0 + (<usize> b << 5);
        const xb = xb0 + (<usize> b << 5);
        let x = v128.load8x8_s(xa);
        let y = v128.load8x8_s(xb);
        let v = v128.load8x8_s(wr0 + o);
        let a0 = i32x4.dot_i16x8_s(x, v);
        let b0 = i32x4.dot_i16x8_s(y, v);
        v = v128.load8x8_s(wr1 + o);
        let a1 = i32x4.dot_i16x8_s(x, v);
        let b1 = i32x4.dot_i16x8_s(y, v);
        v = v128.load8x8_s(wr2 + o);
        let a2 = i32x4.dot_i16x8_s(x, v);
        let b2 = i32x4.dot_i16x8_s(y, v);
        v = v128.load8x8_s(wr3 + o);
        let a3 = i32x4.dot_i16x8_s(x, v);
        let b3 = i32x4.dot_i16x8_s(y, v);
        x = v128.load8x8_s(xa + 8);
        y = v128.load8x8_s(xb + 8);
        v = v128.load8x8_s(wr0 + o + 8);
        a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
        b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
        v = v128.load8x8_s(wr1 + o + 8);
        a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
        b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
        v = v128.load8x8_s(wr2 + o + 8);
        a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
        b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
        v = v128.load8x8_s(wr3 + o + 8);
        a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
        b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
        x = v128.load8x8_s(xa + 16);
        y = v128.load8x8_s(xb + 16);
        v = v128.load8x8_s(wr0 + o + 16);
        a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
        b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
        v = v128.load8x8_s(wr1 + o + 16);
        a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
        b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
        v = v128.load8x8_s(wr2 + o + 16);
        a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
        b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
        v = v128.load8x8_s(wr3 + o + 16);
        a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
        b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
        x = v128.load8x8_s(xa + 24);
        y = v128.load8x8_s(xb + 24);
        v = v128.load8x8_s(wr0 + o + 24);
        a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v));
        b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, v));
        v = v128.load8x8_s(wr1 + o + 24);
        a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v));
        b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, v));
        v = v128.load8x8_s(wr2 + o + 24);
        a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v));
        b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, v));
        v = v128.load8x8_s(wr3 + o + 24);
        a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v));
        b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, v));
        const xd = rowScales(wr0, wr1, wr2, wr3, o - 2);
        const sumA = transposeSum(a0, a1, a2, a3);
        const sumB = transposeSum(b0, b1, b2, b3);
        sa = f32x4.add(sa, f32x4.mul(f32x4.convert_i32x4_s(sumA), f32x4.mul(xd, f32x4.splat(load<f32>(da + (<usize> b << 2))))));
        sb = f32x4.add(sb, f32x4.mul(f32x4.convert_i32x4_s(sumB), f32x4.mul(xd, f32x4.splat(load<f32>(db + (<usize> b << 2))))));
      }
      storeLanes(out + (<usize> (t * outStride + r) << 2), sa, r1 - r);
      storeLanes(out + (<usize> ((t + 1) * outStride + r) << 2), sb, r1 - r);
    }
    if (t < T) {
      let sa = f32x4.splat(0);
      const xa0 = aq + <usize> t * rowQ;
      const da = ad + (<usize> (t * nb) << 2);
      for (let b = 0; b < nb; b++) {
        const o = <usize> b * stride + 2;
        const xa = xa0 + (<usize> b << 5);
        let x = v128.load8x8_s(xa);
        let a0 = i32x4.dot_i16x8_s(x, v128.load8x8_s(wr0 + o));
        let a1 = i32x4.dot_i16x8_s(x, v128.load8x8_s(wr1 + o));
        let a2 = i32x4.dot_i16x8_s(x, v128.load8x8_s(wr2 + o));
        let a3 = i32x4.dot_i16x8_s(x, v128.load8x8_s(wr3 + o));
        x = v128.load8x8_s(xa + 8);
        a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v128.load8x8_s(wr0 + o + 8)));
        a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v128.load8x8_s(wr1 + o + 8)));
        a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v128.load8x8_s(wr2 + o + 8)));
        a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v128.load8x8_s(wr3 + o + 8)));
        x = v128.load8x8_s(xa + 16);
        a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v128.load8x8_s(wr0 + o + 16)));
        a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v128.load8x8_s(wr1 + o + 16)));
        a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v128.load8x8_s(wr2 + o + 16)));
        a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v128.load8x8_s(wr3 + o + 16)));
        x = v128.load8x8_s(xa + 24);
        a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v128.load8x8_s(wr0 + o + 24)));
        a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v128.load8x8_s(wr1 + o + 24)));
        a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v128.load8x8_s(wr2 + o + 24)));
        a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v128.load8x8_s(wr3 + o + 24)));
        const xd = rowScales(wr0, wr1, wr2, wr3, o - 2);
        const sumA = transposeSum(a0, a1, a2, a3);
        sa = f32x4.add(sa, f32x4.mul(f32x4.convert_i32x4_s(sumA), f32x4.mul(xd, f32x4.splat(load<f32>(da + (<usize> b << 2))))));
      }
      storeLanes(out + (<usize> (t * outStride + r) << 2), sa, r1 - r);
    }
  }
}

/**
 * Q8_0 weights stored biased (w + 128: repackQuads with `flip`, flipQ8) against the signed
 * activation and its sums (quantizeQ8 with `biased`): Σw·q = Σ(w + 128)·q − 128·Σq, two relaxed
 * dots per 32 elements where the P/N planes take four (see Q8G). Valid only where the relaxed dot
 * reads its second operand as unsigned bytes and sums without saturation (x86 with VNNI); the
 * host checks that with relaxedDot before choosing it.
 */
export function mmQ8_0b(
  w: usize,
  rb: i32,
  nb: i32,
  aq: usize,
  ad: usize,
  as: usize,
  T: i32,
  out: usize,
  os: i32,
  r0: i32,
  r1: i32,
): void {
  // full groups are byte quads (repackQuads), the last partial group row-major
  const full = r0 + ((r1 - r0) & ~3);
  quadMatmul(9, false, w, rb, nb, aq, ad, as, T, out, os, r0, full);
  if (full < r1) matmul32(9, w, rb, nb, aq, ad, as, T, out, os, full, r1);
}

/**
 * Lane 0 of the relaxed dot of 16 bytes of a against 16 bytes of b (b's top bit set is where
 * engines differ: read as signed, as unsigned, or as unsigned with the i16 pair sums saturated).
 */
export function relaxedDot(a: i32, b: i32): i32 {
  return i32x4.extract_lane(
    i32x4.relaxed_dot_i8x16_i7x16_add_s(i8x16.splat(<i8> a), i8x16.splat(<i8> b), i32x4.splat(0)),
    0,
  );
}

// How this engine runs the i32 relaxed dot (i32x4.relaxed_dot_i8x16_i7x16_add_s), found once per
// instance from its own answer: 1 where it is one instruction (vpdpbusd with AVX-VNNI, Arm's sdot,
// vpdpbssd), 2 where it is pmaddubsw + pmaddwd + paddd (x86 without AVX-VNNI: V8 also rebuilds the
// pmaddwd's vector of ones before each, 5 instructions a dot; pmaddubsw saturates its pair sums,
// which is how the probe tells). With 2 the nibble kernels (Q4_0, Q4_K) sum up to 8 i16 dots
// (i16x8.relaxed_dot_i8x16_i7x16_s: a pair of products ≤ 2·15·128 each, 8 of them < 2^15) and
// widen once (pmaddwd, by ones or by the sub-block's scale): 2 instructions a dot rather than 5.
// With 2 Q8_0 (mmQ8_0) multiplies sign-extended i16 pairs instead (q80Matmul16).
// Every form sums the same exact integers, so the results are the same bit for bit.
let dotMode: i32 = 0;
const DOT_PROBE: usize = memory.data<i8>([-127, -127, -127, -127, -1, -1, -1, -1], 16);
@inline function dotWidens(): bool {
  if (dotMode == 0) {
    const d = i32x4.extract_lane(i32x4.relaxed_dot_i8x16_i7x16_add_s(
      v128.load32_splat(DOT_PROBE), v128.load32_splat(DOT_PROBE + 4), i32x4.splat(0),
    ), 0);
    dotMode = d == -65536 ? 2 : 1;
  }
  return dotMode == 2;
}

/** dotWidens as the host sees it (tests, benches): 1 for the one-instruction dot, 2 otherwise. */
export function dotForm(): i32 {
  dotWidens();
  return dotMode;
}

/** Makes this instance run the nibble kernels in form m (1 or 2; 0: the probe's again), tests. */
export function setDotForm(m: i32): void {
  dotMode = m;
}

export function mmQ4_0(
  w: usize,
  rb: i32,
  nb: i32,
  aq: usize,
  ad: usize,
  as: usize,
  T: i32,
  out: usize,
  os: i32,
  r0: i32,
  r1: i32,
): void {
  const full = r0 + ((r1 - r0) & ~3);
  if (dotWidens()) q40Matmul16(w, rb, nb, aq, ad, as, T, out, os, r0, full);
  else quadMatmul(2, false, w, rb, nb, aq, ad, as, T, out, os, r0, full);
  if (full < r1) matmul32(2, w, rb, nb, aq, ad, as, T, out, os, full, r1);
}
// quadMatmul's Q4_0 with i16 sums (dotWidens), a function of its own (see q4kMatmul16).
@noinline function q40Matmul16(
  w: usize, rb: i32, nb: i32, aq: usize, ad: usize, as: usize, T: i32, out: usize, os: i32,
  r0: i32, r1: i32,
): void {
  quadMatmul(2, true, w, rb, nb, aq, ad, as, T, out, os, r0, r1);
}
export function mmQ4_1(
  w: usize,
  rb: i32,
  nb: i32,
  aq: usize,
  ad: usize,
  as: usize,
  T: i32,
  out: usize,
  os: i32,
  r0: i32,
  r1: i32,
): void {
  const full = r0 + ((r1 - r0) & ~3);
  if (dotWidens()) q41Matmul16(w, rb, nb, aq, ad, as, T, out, os, r0, full);
  else q41Matmul32(w, rb, nb, aq, ad, as, T, out, os, r0, full);
  if (full < r1) matmul32(3, w, rb, nb, aq, ad, as, T, out, os, full, r1);
}
export function mmQ5_0(
  w: usize,
  rb: i32,
  nb: i32,
  aq: usize,
  ad: usize,
  as: usize,
  T: i32,
  out: usize,
  os: i32,
  r0: i32,
  r1: i32,
): void {
  const full = r0 + ((r1 - r0) & ~3);
  if (dotWidens()) q50Matmul16(w, rb, nb, aq, ad, as, T, out, os, r0, full);
  else q50Matmul32(w, rb, nb, aq, ad, as, T, out, os, r0, full);
  if (full < r1) matmul32(6, w, rb, nb, aq, ad, as, T, out, os, full, r1);
}
export function mmQ5_1(
  w: usize,
  rb: i32,
  nb: i32,
  aq: usize,
  ad: usize,
  as: usize,
  T: i32,
  out: usize,
  os: i32,
  r0: i32,
  r1: i32,
): void {
  const full = r0 + ((r1 - r0) & ~3);
  if (dotWidens()) q51Matmul16(w, rb, nb, aq, ad, as, T, out, os, r0, full);
  else q51Matmul32(w, rb, nb, aq, ad, as, T, out, os, r0, full);
  if (full < r1) matmul32(7, w, rb, nb, aq, ad, as, T, out, os, full, r1);
}


// ----------------------------------------------------------------------------- Q4_0, quad layout

// Q4_0 matrices are laid out by repackQuads: each full group of 4 rows holds, block by
// block, [the 4 rows' f16 scales (8 bytes)][byte quads: quad k of row i at 8 + 16k + 4i]. One
// 16-byte load then holds 4 consecutive quants of each of the 4 rows, and a relaxed dot against
// the activation's matching 4 bytes broadcast to every lane sums each row in its own lane: the
// per-row block sums come out with no horizontal reduction (4 and single activation rows). Tiles
// of 8 activation rows turn it around (q40Tile8): the activation in groups of 4 rows (Q8G), each
// weight row's unpacked nibble quad broadcast once for 8 activation rows.

@inline function scales4(p: usize): v128 {
  return scalesToF32(i32x4.extend_low_i16x8_u(v128.load64_zero(p)));
}

// One activation row's contribution to one Q4_0 group-block: (sumi - 8Σa) * xd * yd, lanes = rows.
@inline function q40Step(
  sumf: v128, a: usize, l0: v128, l1: v128, l2: v128, l3: v128, h0: v128, h1: v128, h2: v128,
  h3: v128, xd: v128, yd: f32, sa: i32,
): v128 {
  const z = i32x4.splat(0);
  // the activation's 32 bytes in two loads, each quad broadcast by a shuffle: every wasm load
  // carries an explicit bounds check under V8 here (3 instructions), 8 load32_splat twice that
  const x0 = v128.load(a);
  const x1 = v128.load(a + 16);
  let acc = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x0, x0, 0, 0, 0, 0), l0, z);
  let acc2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x1, x1, 0, 0, 0, 0), h0, z);
  acc = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x0, x0, 1, 1, 1, 1), l1, acc);
  acc2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x1, x1, 1, 1, 1, 1), h1, acc2);
  acc = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x0, x0, 2, 2, 2, 2), l2, acc);
  acc2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x1, x1, 2, 2, 2, 2), h2, acc2);
  acc = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x0, x0, 3, 3, 3, 3), l3, acc);
  acc2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x1, x1, 3, 3, 3, 3), h3, acc2);
  const s = i32x4.sub(i32x4.add(acc, acc2), i32x4.splat(sa << 3));
  return f32x4.add(sumf, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(s), xd), f32x4.splat(yd)));
}

// q40Step with i16 sums (dotWidens): the 8 dots of a block summed as i16 (each lane ≤ 8·2·15·128
// < 2^15), widened once by pmaddwd against ones.
@inline function q40Step16(
  sumf: v128, a: usize, l0: v128, l1: v128, l2: v128, l3: v128, h0: v128, h1: v128, h2: v128,
  h3: v128, xd: v128, yd: f32, sa: i32, ones: v128,
): v128 {
  const x0 = v128.load(a);
  const x1 = v128.load(a + 16);
  let p = i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x0, x0, 0, 0, 0, 0), l0);
  let p2 = i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x1, x1, 0, 0, 0, 0), h0);
  p = i16x8.add(p, i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x0, x0, 1, 1, 1, 1), l1));
  p2 = i16x8.add(p2, i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x1, x1, 1, 1, 1, 1), h1));
  p = i16x8.add(p, i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x0, x0, 2, 2, 2, 2), l2));
  p2 = i16x8.add(p2, i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x1, x1, 2, 2, 2, 2), h2));
  p = i16x8.add(p, i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x0, x0, 3, 3, 3, 3), l3));
  p2 = i16x8.add(p2, i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x1, x1, 3, 3, 3, 3), h3));
  const s = i32x4.sub(i32x4.dot_i16x8_s(i16x8.add(p, p2), ones), i32x4.splat(sa << 3));
  return f32x4.add(sumf, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(s), xd), f32x4.splat(yd)));
}

// Q8_0 under the biased kernel (kind 9). The weights' quant bytes are stored flipped, w + 128 as
// unsigned bytes (repackQuads with `flip`, flipQ8 for rows outside full groups), and are the
// relaxed dot's second operand, which V8 reads as unsigned on x86 with AVX-VNNI (vpdpbusd; the
// host probes it, dotReadsUnsigned); the activation's own signed quants are the first. So
// Σ(w + 128)·q = Σw·q + 128·Σq, and the correction −128·Σq belongs to the activation row: made once
// by quantizeQ8, not per weight block. Float steps in ggml's order: sumi * (xd * yd).

// The activation rows of 8-row tiles (tiledRows) are also laid out in groups of 4 (quantizeQ8
// with `biased`), per block Q8G bytes: quad k of the group's row j at 16k + 4j (signed quants),
// the 4 rows' scales (f32) at 128, their −128·Σq (i32) at 144 (Q8_1 activations: their float
// sums s there). One load then holds quad k of 4 activation rows. The Q4_0 kernel's 8-row tiles
// read the same layout (q40Tile8), and Q4_1's, Q5_0's and Q5_1's (nibbleTile8).
const Q8G: usize = 160;

// Leftover rows (T mod 8) from which a batch takes one more 8-row tile, padded with zero rows,
// rather than a 4-row tile and single rows (which cost 1.2× and 2.2× a row of an 8-row tile).
const Q8_PAD = 6;

// The activation rows in 8-row tiles (the last one perhaps padded, Q8_PAD); the group layout
// holds those.
@inline function tiledRows(T: i32): i32 {
  return (T & 7) >= Q8_PAD ? (T + 7) & ~7 : T & ~7;
}

// The activation rows in the group layout: those of the 8-row tiles and a group of 4 after them
// (q80Tile4) when 3 to 5 rows are left, 3 padded with a zero row (measured: 3 single rows cost
// 1.1-1.4× that tile, 2 single rows 0.7-1.0×). Only after an 8-row tile: q80Tile4 reads two
// weight groups side by side, and where they come from memory rather than from the cache (a
// batch of 3 to 5 rows in a model: every matrix is read once per pass) that made the matmuls of
// a 4-row pass of the 110M model 1.37× slower (and a lone row over two groups 2× slower).
@inline function groupedRows(T: i32): i32 {
  const tiled = tiledRows(T);
  return tiled >= 8 && T - tiled >= 3 ? tiled + 4 : tiled;
}

// The groups of a kind-9 activation: after its sums (as: the Σq of each row and block, i32
// [T × nb], then the group layout at the next 64-byte boundary; see matmul.ts).
@inline function groupBase(as: usize, T: i32, nb: i32): usize {
  return as + ((<usize> (T * nb * 4) + 63) & ~(<usize> 63));
}

// −128·Σq of activation block i (as: the sums, see groupBase), in every lane.
@inline function q80Corr(as: usize, i: usize): v128 {
  return i32x4.splat(-(load<i32>(as + (i << 2)) << 7));
}

// One activation row's contribution to one Q8_0 group-block (quad layout): Σw·q * (xd * yd),
// lanes = the 4 weight rows. q<k>: quad k of the 4 rows (flipped); a: the row's 32 signed quants;
// c: −128·Σq of the row's block, in every lane.
@inline function q80Step(
  sumf: v128, a: usize, q0: v128, q1: v128, q2: v128, q3: v128, q4: v128, q5: v128, q6: v128,
  q7: v128, c: v128, xd: v128, yd: f32,
): v128 {
  const z = i32x4.splat(0);
  const x0 = v128.load(a);
  const x1 = v128.load(a + 16);
  let acc = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x0, x0, 0, 0, 0, 0), q0, c);
  let acc2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x1, x1, 0, 0, 0, 0), q4, z);
  acc = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x0, x0, 1, 1, 1, 1), q1, acc);
  acc2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x1, x1, 1, 1, 1, 1), q5, acc2);
  acc = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x0, x0, 2, 2, 2, 2), q2, acc);
  acc2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x1, x1, 2, 2, 2, 2), q6, acc2);
  acc = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x0, x0, 3, 3, 3, 3), q3, acc);
  acc2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x1, x1, 3, 3, 3, 3), q7, acc2);
  const sumi = i32x4.add(acc, acc2);
  return f32x4.add(sumf, f32x4.mul(f32x4.convert_i32x4_s(sumi), f32x4.mul(xd, f32x4.splat(yd))));
}

@inline function storeRows4(out: usize, outStride: i32, t: i32, r: i32, v: v128): void {
  v128.store(out + (<usize> (t * outStride + r) << 2), v);
}

// a, b, c, d: weight rows r..r+3, lanes = activation rows t..t+3; stored transposed, the first
// nt activation rows.
@inline function transposeStore(out: usize, outStride: i32, t: i32, r: i32, a: v128, b: v128, c: v128, d: v128, nt: i32): void {
  const ab0 = v128.shuffle<i32>(a, b, 0, 4, 1, 5);
  const ab1 = v128.shuffle<i32>(a, b, 2, 6, 3, 7);
  const cd0 = v128.shuffle<i32>(c, d, 0, 4, 1, 5);
  const cd1 = v128.shuffle<i32>(c, d, 2, 6, 3, 7);
  if (nt > 0) storeRows4(out, outStride, t, r, v128.shuffle<i32>(ab0, cd0, 0, 1, 4, 5));
  if (nt > 1) storeRows4(out, outStride, t + 1, r, v128.shuffle<i32>(ab0, cd0, 2, 3, 6, 7));
  if (nt > 2) storeRows4(out, outStride, t + 2, r, v128.shuffle<i32>(ab1, cd1, 0, 1, 4, 5));
  if (nt > 3) storeRows4(out, outStride, t + 3, r, v128.shuffle<i32>(ab1, cd1, 2, 3, 6, 7));
}

// sumf + sumi * (x * y): the float step of a block, lanes = activation rows (x: the weight row's
// scale in every lane, y: the 4 activation rows' scales).
@inline function q80Float(sumf: v128, sumi: v128, x: v128, y: v128): v128 {
  return f32x4.add(sumf, f32x4.mul(f32x4.convert_i32x4_s(sumi), f32x4.mul(x, y)));
}

// 4 weight rows (one quad group at gw) × 8 activation rows (groups at ag and ag + nb·Q8G): each
// weight row's quad is broadcast once for 8 activation rows (the activation-broadcast kernel
// makes one broadcast per activation row and block quad) and dotted against 4 activation rows at
// a time, lanes = activation rows; the 8 integer sums stay in registers through a block.
@inline function q80Tile8(gw: usize, nb: i32, ag: usize, out: usize, outStride: i32, t: i32, r: i32, nt: i32): void {
  let s00 = f32x4.splat(0), s01 = f32x4.splat(0), s10 = f32x4.splat(0), s11 = f32x4.splat(0);
  let s20 = f32x4.splat(0), s21 = f32x4.splat(0), s30 = f32x4.splat(0), s31 = f32x4.splat(0);
  const gstride = <usize> nb * Q8G;
  for (let b = 0; b < nb; b++) {
    const blk = gw + <usize> b * 136;
    const a0 = ag + <usize> b * Q8G;
    const a1 = a0 + gstride;
    // the sums start from the activation rows' −128·Σq
    const cz0 = v128.load(a0 + 144);
    const cz1 = v128.load(a1 + 144);
    let c00 = cz0, c01 = cz1, c10 = cz0, c11 = cz1, c20 = cz0, c21 = cz1, c30 = cz0, c31 = cz1;
    // A real loop over the block's 8 quads: unrolled in the source, binaryen sinks each sum's 8
    // dots into one expression placed after all their operands are made, and V8 then spills
    // most of those.
    for (let k: usize = 0; k < 128; k += 16) {
      const q = v128.load(blk + 8 + k);
      const x0 = v128.load(a0 + k);
      const x1 = v128.load(a1 + k);
      const b0 = v128.shuffle<i32>(q, q, 0, 0, 0, 0);
      c00 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, b0, c00);
      c01 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, b0, c01);
      const b1 = v128.shuffle<i32>(q, q, 1, 1, 1, 1);
      c10 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, b1, c10);
      c11 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, b1, c11);
      const b2 = v128.shuffle<i32>(q, q, 2, 2, 2, 2);
      c20 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, b2, c20);
      c21 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, b2, c21);
      const b3 = v128.shuffle<i32>(q, q, 3, 3, 3, 3);
      c30 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, b3, c30);
      c31 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, b3, c31);
    }
    const xd = scales4(blk);
    const y0 = v128.load(a0 + 128);
    const y1 = v128.load(a1 + 128);
    const x0 = v128.shuffle<i32>(xd, xd, 0, 0, 0, 0);
    s00 = q80Float(s00, c00, x0, y0);
    s01 = q80Float(s01, c01, x0, y1);
    const x1 = v128.shuffle<i32>(xd, xd, 1, 1, 1, 1);
    s10 = q80Float(s10, c10, x1, y0);
    s11 = q80Float(s11, c11, x1, y1);
    const x2 = v128.shuffle<i32>(xd, xd, 2, 2, 2, 2);
    s20 = q80Float(s20, c20, x2, y0);
    s21 = q80Float(s21, c21, x2, y1);
    const x3 = v128.shuffle<i32>(xd, xd, 3, 3, 3, 3);
    s30 = q80Float(s30, c30, x3, y0);
    s31 = q80Float(s31, c31, x3, y1);
  }
  transposeStore(out, outStride, t, r, s00, s10, s20, s30, nt);
  transposeStore(out, outStride, t + 4, r, s01, s11, s21, s31, nt - 4);
}

// 8 weight rows (the quad groups at gw and gw + gstride) × the 4 activation rows of the group at
// ag: q80Tile8 turned around for a batch's last 4 rows. Each activation row's quad is broadcast
// once for 8 weight rows, lanes = weight rows.
@inline function q80Tile4(gw: usize, gstride: usize, nb: i32, ag: usize, out: usize, outStride: i32, t: i32, r: i32, nt: i32): void {
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0), s2 = f32x4.splat(0), s3 = f32x4.splat(0);
  let s4 = f32x4.splat(0), s5 = f32x4.splat(0), s6 = f32x4.splat(0), s7 = f32x4.splat(0);
  for (let b = 0; b < nb; b++) {
    const blk = gw + <usize> b * 136;
    const blk2 = blk + gstride;
    const a = ag + <usize> b * Q8G;
    // the sums of activation row j start from its −128·Σq
    const cz = v128.load(a + 144);
    let c0 = v128.shuffle<i32>(cz, cz, 0, 0, 0, 0), c1 = v128.shuffle<i32>(cz, cz, 1, 1, 1, 1);
    let c2 = v128.shuffle<i32>(cz, cz, 2, 2, 2, 2), c3 = v128.shuffle<i32>(cz, cz, 3, 3, 3, 3);
    let c4 = c0, c5 = c1, c6 = c2, c7 = c3;
    // a real loop, as in q80Tile8
    for (let k: usize = 0; k < 128; k += 16) {
      const x = v128.load(a + k);
      const q = v128.load(blk + 8 + k);
      const q2 = v128.load(blk2 + 8 + k);
      const x0 = v128.shuffle<i32>(x, x, 0, 0, 0, 0);
      c0 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, q, c0);
      c4 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, q2, c4);
      const x1 = v128.shuffle<i32>(x, x, 1, 1, 1, 1);
      c1 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, q, c1);
      c5 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, q2, c5);
      const x2 = v128.shuffle<i32>(x, x, 2, 2, 2, 2);
      c2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x2, q, c2);
      c6 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x2, q2, c6);
      const x3 = v128.shuffle<i32>(x, x, 3, 3, 3, 3);
      c3 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x3, q, c3);
      c7 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x3, q2, c7);
    }
    const xd = scales4(blk);
    const xd2 = scales4(blk2);
    const yd = v128.load(a + 128);
    const y0 = v128.shuffle<i32>(yd, yd, 0, 0, 0, 0);
    s0 = q80Float(s0, c0, xd, y0);
    s4 = q80Float(s4, c4, xd2, y0);
    const y1 = v128.shuffle<i32>(yd, yd, 1, 1, 1, 1);
    s1 = q80Float(s1, c1, xd, y1);
    s5 = q80Float(s5, c5, xd2, y1);
    const y2 = v128.shuffle<i32>(yd, yd, 2, 2, 2, 2);
    s2 = q80Float(s2, c2, xd, y2);
    s6 = q80Float(s6, c6, xd2, y2);
    const y3 = v128.shuffle<i32>(yd, yd, 3, 3, 3, 3);
    s3 = q80Float(s3, c3, xd, y3);
    s7 = q80Float(s7, c7, xd2, y3);
  }
  // the first nt activation rows (at least 3)
  storeRows4(out, outStride, t, r, s0);
  storeRows4(out, outStride, t, r + 4, s4);
  storeRows4(out, outStride, t + 1, r, s1);
  storeRows4(out, outStride, t + 1, r + 4, s5);
  storeRows4(out, outStride, t + 2, r, s2);
  storeRows4(out, outStride, t + 2, r + 4, s6);
  if (nt > 3) {
    storeRows4(out, outStride, t + 3, r, s3);
    storeRows4(out, outStride, t + 3, r + 4, s7);
  }
}

// 4 weight rows (one Q4_0 quad group at gw) × 8 activation rows (groups at ag and ag + nb·Q8G,
// as q80Tile8): each weight row's nibble quad is broadcast once for 8 activation rows and is the
// relaxed dot's second operand (0..15, valid however the engine reads it), the signed activation
// quants of 4 rows the first; lanes = activation rows. Σ(w + 8)·q = Σw·q + 8Σq, so the sums start
// from −8Σq (the group's −128Σq >> 4, exact). Float steps in ggml's order: (sumi * xd) * yd.
@inline function q40Tile8(gw: usize, nb: i32, ag: usize, out: usize, outStride: i32, t: i32, r: i32, nt: i32): void {
  const m4 = mask4();
  let s00 = f32x4.splat(0), s01 = f32x4.splat(0), s10 = f32x4.splat(0), s11 = f32x4.splat(0);
  let s20 = f32x4.splat(0), s21 = f32x4.splat(0), s30 = f32x4.splat(0), s31 = f32x4.splat(0);
  const gstride = <usize> nb * Q8G;
  for (let b = 0; b < nb; b++) {
    const blk = gw + <usize> b * 72;
    const a0 = ag + <usize> b * Q8G;
    const a1 = a0 + gstride;
    const cz0 = i32x4.shr_s(v128.load(a0 + 144), 4);
    const cz1 = i32x4.shr_s(v128.load(a1 + 144), 4);
    let c00 = cz0, c01 = cz1, c10 = cz0, c11 = cz1, c20 = cz0, c21 = cz1, c30 = cz0, c31 = cz1;
    // real loops over the block's 8 nibble quads (as q80Tile8), one quad per pass (both halves of
    // a byte quad in one pass spilled sums): the low nibbles of byte quad k are elements 4k..4k+3
    // (activation quad k, at 16k), its high nibbles elements 16 + 4k.. (quad k + 4)
    for (let k: usize = 0; k < 64; k += 16) {
      const q = v128.and(v128.load(blk + 8 + k), m4);
      const x0 = v128.load(a0 + k);
      const x1 = v128.load(a1 + k);
      const b0 = v128.shuffle<i32>(q, q, 0, 0, 0, 0);
      c00 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, b0, c00);
      c01 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, b0, c01);
      const b1 = v128.shuffle<i32>(q, q, 1, 1, 1, 1);
      c10 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, b1, c10);
      c11 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, b1, c11);
      const b2 = v128.shuffle<i32>(q, q, 2, 2, 2, 2);
      c20 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, b2, c20);
      c21 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, b2, c21);
      const b3 = v128.shuffle<i32>(q, q, 3, 3, 3, 3);
      c30 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, b3, c30);
      c31 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, b3, c31);
    }
    for (let k: usize = 64; k < 128; k += 16) {
      const q = hiNibM(v128.load(blk + k - 56), m4);
      const x0 = v128.load(a0 + k);
      const x1 = v128.load(a1 + k);
      const b0 = v128.shuffle<i32>(q, q, 0, 0, 0, 0);
      c00 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, b0, c00);
      c01 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, b0, c01);
      const b1 = v128.shuffle<i32>(q, q, 1, 1, 1, 1);
      c10 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, b1, c10);
      c11 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, b1, c11);
      const b2 = v128.shuffle<i32>(q, q, 2, 2, 2, 2);
      c20 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, b2, c20);
      c21 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, b2, c21);
      const b3 = v128.shuffle<i32>(q, q, 3, 3, 3, 3);
      c30 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, b3, c30);
      c31 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, b3, c31);
    }
    const xd = scales4(blk);
    const y0 = v128.load(a0 + 128);
    const y1 = v128.load(a1 + 128);
    const x0 = v128.shuffle<i32>(xd, xd, 0, 0, 0, 0);
    s00 = q40Float(s00, c00, x0, y0);
    s01 = q40Float(s01, c01, x0, y1);
    const x1 = v128.shuffle<i32>(xd, xd, 1, 1, 1, 1);
    s10 = q40Float(s10, c10, x1, y0);
    s11 = q40Float(s11, c11, x1, y1);
    const x2 = v128.shuffle<i32>(xd, xd, 2, 2, 2, 2);
    s20 = q40Float(s20, c20, x2, y0);
    s21 = q40Float(s21, c21, x2, y1);
    const x3 = v128.shuffle<i32>(xd, xd, 3, 3, 3, 3);
    s30 = q40Float(s30, c30, x3, y0);
    s31 = q40Float(s31, c31, x3, y1);
  }
  transposeStore(out, outStride, t, r, s00, s10, s20, s30, nt);
  transposeStore(out, outStride, t + 4, r, s01, s11, s21, s31, nt - 4);
}

// q40Tile8 with i16 sums (dotWidens): a block's 8 dots per sum as i16 (≤ 8·2·15·128 < 2^15),
// widened by pmaddwd against ones and added to −8Σq once per block.
@inline function q40Tile16(gw: usize, nb: i32, ag: usize, out: usize, outStride: i32, t: i32, r: i32, nt: i32): void {
  const m4 = mask4();
  const ones = ones16();
  let s00 = f32x4.splat(0), s01 = f32x4.splat(0), s10 = f32x4.splat(0), s11 = f32x4.splat(0);
  let s20 = f32x4.splat(0), s21 = f32x4.splat(0), s30 = f32x4.splat(0), s31 = f32x4.splat(0);
  const gstride = <usize> nb * Q8G;
  for (let b = 0; b < nb; b++) {
    const blk = gw + <usize> b * 72;
    const a0 = ag + <usize> b * Q8G;
    const a1 = a0 + gstride;
    let c00 = i32x4.splat(0), c01 = i32x4.splat(0), c10 = i32x4.splat(0), c11 = i32x4.splat(0);
    let c20 = i32x4.splat(0), c21 = i32x4.splat(0), c30 = i32x4.splat(0), c31 = i32x4.splat(0);
    // real loops over the block's 8 nibble quads (as q40Tile8)
    for (let k: usize = 0; k < 64; k += 16) {
      const q = v128.and(v128.load(blk + 8 + k), m4);
      const x0 = v128.load(a0 + k);
      const x1 = v128.load(a1 + k);
      const b0 = v128.shuffle<i32>(q, q, 0, 0, 0, 0);
      c00 = i16x8.add(c00, i16x8.relaxed_dot_i8x16_i7x16_s(x0, b0));
      c01 = i16x8.add(c01, i16x8.relaxed_dot_i8x16_i7x16_s(x1, b0));
      const b1 = v128.shuffle<i32>(q, q, 1, 1, 1, 1);
      c10 = i16x8.add(c10, i16x8.relaxed_dot_i8x16_i7x16_s(x0, b1));
      c11 = i16x8.add(c11, i16x8.relaxed_dot_i8x16_i7x16_s(x1, b1));
      const b2 = v128.shuffle<i32>(q, q, 2, 2, 2, 2);
      c20 = i16x8.add(c20, i16x8.relaxed_dot_i8x16_i7x16_s(x0, b2));
      c21 = i16x8.add(c21, i16x8.relaxed_dot_i8x16_i7x16_s(x1, b2));
      const b3 = v128.shuffle<i32>(q, q, 3, 3, 3, 3);
      c30 = i16x8.add(c30, i16x8.relaxed_dot_i8x16_i7x16_s(x0, b3));
      c31 = i16x8.add(c31, i16x8.relaxed_dot_i8x16_i7x16_s(x1, b3));
    }
    for (let k: usize = 64; k < 128; k += 16) {
      const q = hiNibM(v128.load(blk + k - 56), m4);
      const x0 = v128.load(a0 + k);
      const x1 = v128.load(a1 + k);
      const b0 = v128.shuffle<i32>(q, q, 0, 0, 0, 0);
      c00 = i16x8.add(c00, i16x8.relaxed_dot_i8x16_i7x16_s(x0, b0));
      c01 = i16x8.add(c01, i16x8.relaxed_dot_i8x16_i7x16_s(x1, b0));
      const b1 = v128.shuffle<i32>(q, q, 1, 1, 1, 1);
      c10 = i16x8.add(c10, i16x8.relaxed_dot_i8x16_i7x16_s(x0, b1));
      c11 = i16x8.add(c11, i16x8.relaxed_dot_i8x16_i7x16_s(x1, b1));
      const b2 = v128.shuffle<i32>(q, q, 2, 2, 2, 2);
      c20 = i16x8.add(c20, i16x8.relaxed_dot_i8x16_i7x16_s(x0, b2));
      c21 = i16x8.add(c21, i16x8.relaxed_dot_i8x16_i7x16_s(x1, b2));
      const b3 = v128.shuffle<i32>(q, q, 3, 3, 3, 3);
      c30 = i16x8.add(c30, i16x8.relaxed_dot_i8x16_i7x16_s(x0, b3));
      c31 = i16x8.add(c31, i16x8.relaxed_dot_i8x16_i7x16_s(x1, b3));
    }
    const cz0 = i32x4.shr_s(v128.load(a0 + 144), 4);
    const cz1 = i32x4.shr_s(v128.load(a1 + 144), 4);
    const xd = scales4(blk);
    const y0 = v128.load(a0 + 128);
    const y1 = v128.load(a1 + 128);
    const x0 = v128.shuffle<i32>(xd, xd, 0, 0, 0, 0);
    s00 = q40Float(s00, i32x4.add(i32x4.dot_i16x8_s(c00, ones), cz0), x0, y0);
    s01 = q40Float(s01, i32x4.add(i32x4.dot_i16x8_s(c01, ones), cz1), x0, y1);
    const x1 = v128.shuffle<i32>(xd, xd, 1, 1, 1, 1);
    s10 = q40Float(s10, i32x4.add(i32x4.dot_i16x8_s(c10, ones), cz0), x1, y0);
    s11 = q40Float(s11, i32x4.add(i32x4.dot_i16x8_s(c11, ones), cz1), x1, y1);
    const x2 = v128.shuffle<i32>(xd, xd, 2, 2, 2, 2);
    s20 = q40Float(s20, i32x4.add(i32x4.dot_i16x8_s(c20, ones), cz0), x2, y0);
    s21 = q40Float(s21, i32x4.add(i32x4.dot_i16x8_s(c21, ones), cz1), x2, y1);
    const x3 = v128.shuffle<i32>(xd, xd, 3, 3, 3, 3);
    s30 = q40Float(s30, i32x4.add(i32x4.dot_i16x8_s(c30, ones), cz0), x3, y0);
    s31 = q40Float(s31, i32x4.add(i32x4.dot_i16x8_s(c31, ones), cz1), x3, y1);
  }
  transposeStore(out, outStride, t, r, s00, s10, s20, s30, nt);
  transposeStore(out, outStride, t + 4, r, s01, s11, s21, s31, nt - 4);
}

// sumf + (sumi * x) * y: a Q4_0 block's float step in ggml's order (lanes = activation rows).
@inline function q40Float(sumf: v128, sumi: v128, x: v128, y: v128): v128 {
  return f32x4.add(sumf, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(sumi), x), y));
}

// Full 4-row groups r0..r1 (r1 - r0 a multiple of 4) of a quad-layout Q4_0 matrix (kind 2) or
// biased Q8_0 matrix (kind 9, see Q8G) against T activation rows; w16 (Q4_0, a constant at each
// call): i16 sums (dotWidens). (Q8_0 over P/N
// planes, kind 8, measured faster as whole blocks: it needs both planes broadcast.)
@inline function quadMatmul(
  kind: i32,
  w16: bool,
  w: usize,
  rowBytes: i32,
  nb: i32,
  aq: usize,
  ad: usize,
  as: usize,
  T: i32,
  out: usize,
  outStride: i32,
  r0: i32,
  r1: i32,
): void {
  const gb = <usize> (4 * blockBytes(kind));
  const m4 = mask4();
  const ones = ones16();
  for (let r = r0; r < r1; r += 4) {
    const gw = w + <usize> r * rowBytes;
    let t = 0;
    if (kind == 9) {
      const g0 = groupBase(as, T, nb);
      const tiled = tiledRows(T);
      for (; t < tiled; t += 8) q80Tile8(gw, nb, g0 + <usize> (t >> 2) * <usize> nb * Q8G, out, outStride, t, r, min<i32>(8, T - t));
      t = min<i32>(t, T);
      if (t + 3 <= T && t >= 8) {
        // 3 to 5 rows left after 8-row tiles: weight groups in pairs take 4 of them (q80Tile4, 3
        // padded; see groupedRows); a chunk's last, odd group takes them below (4 in a tile, the
        // rest one by one)
        if (((r - r0) & 4) != 0) t += 4;
        else if (r + 8 <= r1) {
          q80Tile4(gw, <usize> rowBytes << 2, nb, g0 + <usize> (t >> 2) * <usize> nb * Q8G, out, outStride, t, r, T - t);
          t += 4;
        }
      }
    }
    for (; kind == 9 && t + 4 <= T; t += 4) {
      // 4 rows left (a batch of 4 or 5, or a chunk's last, odd weight group after 8-row tiles):
      // each block's quads loaded once for them
      let s0 = f32x4.splat(0);
      let s1 = f32x4.splat(0);
      let s2 = f32x4.splat(0);
      let s3 = f32x4.splat(0);
      for (let b = 0; b < nb; b++) {
        const blk = gw + <usize> b * gb;
        const xd = scales4(blk);
        const i0 = <usize> (t * nb + b);
        const q0 = v128.load(blk + 8);
        const q1 = v128.load(blk + 24);
        const q2 = v128.load(blk + 40);
        const q3 = v128.load(blk + 56);
        const q4 = v128.load(blk + 72);
        const q5 = v128.load(blk + 88);
        const q6 = v128.load(blk + 104);
        const q7 = v128.load(blk + 120);
        const n1 = <usize> nb;
        s0 = q80Step(s0, aq + (i0 << 5), q0, q1, q2, q3, q4, q5, q6, q7, q80Corr(as, i0), xd, load<f32>(ad + (i0 << 2)));
        s1 = q80Step(s1, aq + ((i0 + n1) << 5), q0, q1, q2, q3, q4, q5, q6, q7, q80Corr(as, i0 + n1), xd, load<f32>(ad + ((i0 + n1) << 2)));
        s2 = q80Step(s2, aq + ((i0 + 2 * n1) << 5), q0, q1, q2, q3, q4, q5, q6, q7, q80Corr(as, i0 + 2 * n1), xd, load<f32>(ad + ((i0 + 2 * n1) << 2)));
        s3 = q80Step(s3, aq + ((i0 + 3 * n1) << 5), q0, q1, q2, q3, q4, q5, q6, q7, q80Corr(as, i0 + 3 * n1), xd, load<f32>(ad + ((i0 + 3 * n1) << 2)));
      }
      storeRows4(out, outStride, t, r, s0);
      storeRows4(out, outStride, t + 1, r, s1);
      storeRows4(out, outStride, t + 2, r, s2);
      storeRows4(out, outStride, t + 3, r, s3);
    }
    for (; kind == 9 && t < T; t++) {
      // the rest one row at a time (decode)
      let s0 = f32x4.splat(0);
      for (let b = 0; b < nb; b++) {
        const blk = gw + <usize> b * gb;
        const xd = scales4(blk);
        const i0 = <usize> (t * nb + b);
        const q0 = v128.load(blk + 8);
        const q1 = v128.load(blk + 24);
        const q2 = v128.load(blk + 40);
        const q3 = v128.load(blk + 56);
        const q4 = v128.load(blk + 72);
        const q5 = v128.load(blk + 88);
        const q6 = v128.load(blk + 104);
        const q7 = v128.load(blk + 120);
        s0 = q80Step(s0, aq + (i0 << 5), q0, q1, q2, q3, q4, q5, q6, q7, q80Corr(as, i0), xd, load<f32>(ad + (i0 << 2)));
      }
      storeRows4(out, outStride, t, r, s0);
    }
    if (kind == 2) {
      // Q4_0: 8-row tiles (the last perhaps padded, tiledRows), then 4 rows and single rows below
      const g0 = groupBase(as, T, nb);
      const tiled = tiledRows(T);
      if (w16) {
        for (; t < tiled; t += 8) q40Tile16(gw, nb, g0 + <usize> (t >> 2) * <usize> nb * Q8G, out, outStride, t, r, min<i32>(8, T - t));
      } else {
        for (; t < tiled; t += 8) q40Tile8(gw, nb, g0 + <usize> (t >> 2) * <usize> nb * Q8G, out, outStride, t, r, min<i32>(8, T - t));
      }
      t = min<i32>(t, T);
    }
    for (; t + 4 <= T; t += 4) {
      let s0 = f32x4.splat(0);
      let s1 = f32x4.splat(0);
      let s2 = f32x4.splat(0);
      let s3 = f32x4.splat(0);
      for (let b = 0; b < nb; b++) {
        const blk = gw + <usize> b * gb;
        const xd = scales4(blk);
        const i0 = <usize> (t * nb + b);
        const i1 = i0 + <usize> nb;
        const i2 = i1 + <usize> nb;
        const i3 = i2 + <usize> nb;
        if (kind == 2) {
          const q0 = v128.load(blk + 8);
          const q1 = v128.load(blk + 24);
          const q2 = v128.load(blk + 40);
          const q3 = v128.load(blk + 56);
          const l0 = v128.and(q0, m4);
          const l1 = v128.and(q1, m4);
          const l2 = v128.and(q2, m4);
          const l3 = v128.and(q3, m4);
          const h0 = hiNibM(q0, m4);
          const h1 = hiNibM(q1, m4);
          const h2 = hiNibM(q2, m4);
          const h3 = hiNibM(q3, m4);
          if (w16) {
            s0 = q40Step16(s0, aq + (i0 << 5), l0, l1, l2, l3, h0, h1, h2, h3, xd, load<f32>(ad + (i0 << 2)), load<i32>(as + (i0 << 2)), ones);
            s1 = q40Step16(s1, aq + (i1 << 5), l0, l1, l2, l3, h0, h1, h2, h3, xd, load<f32>(ad + (i1 << 2)), load<i32>(as + (i1 << 2)), ones);
            s2 = q40Step16(s2, aq + (i2 << 5), l0, l1, l2, l3, h0, h1, h2, h3, xd, load<f32>(ad + (i2 << 2)), load<i32>(as + (i2 << 2)), ones);
            s3 = q40Step16(s3, aq + (i3 << 5), l0, l1, l2, l3, h0, h1, h2, h3, xd, load<f32>(ad + (i3 << 2)), load<i32>(as + (i3 << 2)), ones);
          } else {
            s0 = q40Step(s0, aq + (i0 << 5), l0, l1, l2, l3, h0, h1, h2, h3, xd, load<f32>(ad + (i0 << 2)), load<i32>(as + (i0 << 2)));
            s1 = q40Step(s1, aq + (i1 << 5), l0, l1, l2, l3, h0, h1, h2, h3, xd, load<f32>(ad + (i1 << 2)), load<i32>(as + (i1 << 2)));
            s2 = q40Step(s2, aq + (i2 << 5), l0, l1, l2, l3, h0, h1, h2, h3, xd, load<f32>(ad + (i2 << 2)), load<i32>(as + (i2 << 2)));
            s3 = q40Step(s3, aq + (i3 << 5), l0, l1, l2, l3, h0, h1, h2, h3, xd, load<f32>(ad + (i3 << 2)), load<i32>(as + (i3 << 2)));
          }
        }
      }
      storeRows4(out, outStride, t, r, s0);
      storeRows4(out, outStride, t + 1, r, s1);
      storeRows4(out, outStride, t + 2, r, s2);
      storeRows4(out, outStride, t + 3, r, s3);
    }
    for (; t < T; t++) {
      let s0 = f32x4.splat(0);
      for (let b = 0; b < nb; b++) {
        const blk = gw + <usize> b * gb;
        const xd = scales4(blk);
        const i0 = <usize> (t * nb + b);
        if (kind == 2) {
          const q0 = v128.load(blk + 8);
          const q1 = v128.load(blk + 24);
          const q2 = v128.load(blk + 40);
          const q3 = v128.load(blk + 56);
          if (w16) {
            s0 = q40Step16(
              s0, aq + (i0 << 5), v128.and(q0, m4), v128.and(q1, m4), v128.and(q2, m4), v128.and(q3, m4),
              hiNibM(q0, m4), hiNibM(q1, m4), hiNibM(q2, m4), hiNibM(q3, m4), xd,
              load<f32>(ad + (i0 << 2)), load<i32>(as + (i0 << 2)), ones,
            );
          } else {
            s0 = q40Step(
              s0, aq + (i0 << 5), v128.and(q0, m4), v128.and(q1, m4), v128.and(q2, m4), v128.and(q3, m4),
              hiNibM(q0, m4), hiNibM(q1, m4), hiNibM(q2, m4), hiNibM(q3, m4), xd,
              load<f32>(ad + (i0 << 2)), load<i32>(as + (i0 << 2)),
            );
          }
        }
      }
      storeRows4(out, outStride, t, r, s0);
    }
  }
}

/**
 * Lay out the full 4-row groups (nGroups from w) of a Q4_0 (bb 18) or Q8_0 (bb 34) matrix as
 * quadMatmul reads them, in place; `flip`: quant bytes + 128 (Q8_0 under mmQ8_0b, see Q8G). tmp:
 * 4·rowBytes of scratch.
 */
export function repackQuads(w: usize, rowBytes: i32, bb: i32, nGroups: i32, tmp: usize, flip: bool): void {
  const fx: u32 = flip ? 0x80808080 : 0;
  const gbytes = <usize> rowBytes << 2;
  const nb = rowBytes / bb;
  const nq = (bb - 2) >> 2; // byte quads per block
  for (let g = 0; g < nGroups; g++) {
    const base = w + <usize> g * gbytes;
    memory.copy(tmp, base, gbytes);
    for (let b = 0; b < nb; b++) {
      const dst = base + <usize> (b * 4 * bb);
      for (let i = 0; i < 4; i++) {
        const src = tmp + <usize> (i * rowBytes + b * bb);
        store<u16>(dst + (<usize> i << 1), load<u16>(src));
        for (let k = 0; k < nq; k++) {
          store<u32>(dst + 8 + <usize> (16 * k + 4 * i), load<u32>(src + 2 + (<usize> k << 2)) ^ fx);
        }
      }
    }
  }
}

/**
 * Flip the quant bytes (+ 128, see Q8G) of nBlocks Q8_0 blocks at w, in place: the rows of a
 * matrix under mmQ8_0b outside its full 4-row groups. Its own inverse.
 */
export function flipQ8(w: usize, nBlocks: i32): void {
  for (let b = 0; b < nBlocks; b++) {
    const p = w + <usize> b * 34 + 2;
    v128.store(p, v128.xor(v128.load(p), i8x16.splat(-128)));
    v128.store(p + 16, v128.xor(v128.load(p + 16), i8x16.splat(-128)));
  }
}

// ----------------------------------------------------------------------------- Q4_1, Q5_0, Q5_1: quad layout

// Q4_1 (kind 3), Q5_0 (kind 6) and Q5_1 (kind 7) matrices are laid out by repackNibbleQuads: each
// full group of 4 rows holds, block by block, [the 4 rows' f16 scales d (8 bytes)] [Q4_1, Q5_1:
// their f16 mins m (8 bytes)] [Q5_0, Q5_1: their 5th bits as one vector (16 bytes)] [nibble quads
// as Q4_0's: quad k of row i at 16k + 4i] (80, 88 and 96 bytes: 4 blocks' worth). Byte 4i + j of
// the 5th-bit vector holds in bit k the 5th bit of element 4k + j of row i, and in bit 4 + k that
// of element 16 + 4k + j: the elements whose low and high nibbles nibble quad k holds in byte
// 4i + j. So one 16-bit shift and a mask bring quad k's 5th bits to bit 4 of every byte
// (nibbleQuad), where ggml's 32 bits a row cost a broadcast, a shuffle, a mask and a compare per 16
// elements (highBits). The 4- or 5-bit quants are the relaxed dot's 7-bit operand with lanes =
// rows, as Q4_0's nibbles are: 4 rows of a block in 8 dots against the activation's quads
// broadcast, no horizontal sums. The block sums are exact integers, so the float steps
// (blockStep, ggml's order) give the same bits as matmul32.

/** A group block's bytes for kind 3, 6 or 7 (4 blocks). */
@inline function nibbleGroupBytes(kind: i32): usize {
  return kind == 3 ? 80 : kind == 6 ? 88 : 96;
}

/**
 * Lay out the full 4-row groups (nGroups from w) of a Q4_1 (bb 20), Q5_0 (bb 22) or Q5_1 (bb 24)
 * matrix as nibbleMatmul reads them, in place. tmp: 4·rowBytes of scratch.
 */
export function repackNibbleQuads(w: usize, rowBytes: i32, bb: i32, nGroups: i32, tmp: usize): void {
  const gbytes = <usize> rowBytes << 2;
  const nb = rowBytes / bb;
  const hdr = bb == 22 ? 2 : 4; // f16 bytes first: d (Q5_0), d and m (Q4_1, Q5_1)
  const five = bb != 20;
  const hv = <usize> (hdr << 2); // the 5th-bit vector's offset in a group block
  const qv = hv + (five ? 16 : 0); // the nibble quads'
  const qs = hdr + (five ? 4 : 0); // a block's nibbles
  for (let g = 0; g < nGroups; g++) {
    const base = w + <usize> g * gbytes;
    memory.copy(tmp, base, gbytes);
    for (let b = 0; b < nb; b++) {
      const dst = base + <usize> (b * 4 * bb);
      for (let i = 0; i < 4; i++) {
        const src = tmp + <usize> (i * rowBytes + b * bb);
        store<u16>(dst + (<usize> i << 1), load<u16>(src));
        if (hdr == 4) store<u16>(dst + 8 + (<usize> i << 1), load<u16>(src + 2));
        if (five) {
          const qh = load<u32>(src + <usize> hdr);
          for (let j = 0; j < 4; j++) {
            let v: u32 = 0;
            for (let k = 0; k < 4; k++) {
              v |= ((qh >> (4 * k + j)) & 1) << k;
              v |= ((qh >> (16 + 4 * k + j)) & 1) << (4 + k);
            }
            store<u8>(dst + hv + <usize> (4 * i + j), <u8> v);
          }
        }
        for (let k = 0; k < 4; k++) {
          store<u32>(dst + qv + <usize> (16 * k + 4 * i), load<u32>(src + <usize> (qs + 4 * k)));
        }
      }
    }
  }
}

// Nibble quad q (quad k of a group block) and, five, the block's 5th-bit vector h -> the quants of
// its low (hi = false: elements 4k..4k + 3 of each row) or high nibbles (16 + 4k..), 0..15 or
// 0..31: bit k (4 + k) of every byte of h moved to bit 4 by one 16-bit shift (no bit crosses into
// the byte above or below where it is masked), then masked.
@inline function nibbleQuad(five: bool, q: v128, h: v128, k: i32, hi: bool, m4: v128, m10: v128): v128 {
  const n = hi ? v128.and(i16x8.shr_u(q, 4), m4) : v128.and(q, m4);
  if (!five) return n;
  const s = hi ? k : k - 4;
  const b = s == 0 ? h : s > 0 ? i16x8.shr_u(h, s) : i16x8.shl(h, -s);
  return v128.or(n, v128.and(b, m10));
}

// One activation row's block (its 32 quants at a) against a group block's unpacked quants (l: low
// nibbles' quads, h: high), lanes = rows: the 4 rows' integer dots. w16 (dotWidens): i16 sums
// widened by pmaddwd against ones, of 4 dots for 5-bit quants (each pair ≤ 2·31·128, 4 of them <
// 2^15), of all 8 for 4-bit ones (8 · 2·15·128 < 2^15, as Q4_0's).
@inline function nibbleDots(
  w16: bool, five: bool, a: usize, l0: v128, l1: v128, l2: v128, l3: v128, h0: v128, h1: v128, h2: v128,
  h3: v128, ones: v128,
): v128 {
  const x0 = v128.load(a);
  const x1 = v128.load(a + 16);
  if (w16) {
    let p = i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x0, x0, 0, 0, 0, 0), l0);
    let p2 = i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x1, x1, 0, 0, 0, 0), h0);
    p = i16x8.add(p, i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x0, x0, 1, 1, 1, 1), l1));
    p2 = i16x8.add(p2, i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x1, x1, 1, 1, 1, 1), h1));
    p = i16x8.add(p, i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x0, x0, 2, 2, 2, 2), l2));
    p2 = i16x8.add(p2, i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x1, x1, 2, 2, 2, 2), h2));
    p = i16x8.add(p, i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x0, x0, 3, 3, 3, 3), l3));
    p2 = i16x8.add(p2, i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x1, x1, 3, 3, 3, 3), h3));
    if (!five) return i32x4.dot_i16x8_s(i16x8.add(p, p2), ones);
    return i32x4.add(i32x4.dot_i16x8_s(p, ones), i32x4.dot_i16x8_s(p2, ones));
  }
  const z = i32x4.splat(0);
  let acc = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x0, x0, 0, 0, 0, 0), l0, z);
  let acc2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x1, x1, 0, 0, 0, 0), h0, z);
  acc = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x0, x0, 1, 1, 1, 1), l1, acc);
  acc2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x1, x1, 1, 1, 1, 1), h1, acc2);
  acc = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x0, x0, 2, 2, 2, 2), l2, acc);
  acc2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x1, x1, 2, 2, 2, 2), h2, acc2);
  acc = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x0, x0, 3, 3, 3, 3), l3, acc);
  acc2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.shuffle<i32>(x1, x1, 3, 3, 3, 3), h3, acc2);
  return i32x4.add(acc, acc2);
}

// Full 4-row groups r0..r1 (r1 - r0 a multiple of 4) of a quad-layout Q4_1 (kind 3), Q5_0 (kind
// 6) or Q5_1 (kind 7) matrix against T activation rows, 4 rows a pass sharing each block's unpacked quants, then
// one at a time; w16 (a constant at each call): i16 sums (dotWidens).
@inline function nibbleMatmul(
  kind: i32, w16: bool, w: usize, rowBytes: i32, nb: i32, aq: usize, ad: usize, as: usize, T: i32,
  out: usize, outStride: i32, r0: i32, r1: i32,
): void {
  const gb = nibbleGroupBytes(kind);
  const five = kind != 3;
  const hv: usize = kind == 6 ? 8 : 16; // the 5th-bit vector (Q5_0, Q5_1) or the quads (Q4_1)
  const qv = hv + (five ? 16 : 0); // the quads
  const m4 = mask4();
  const m10 = i8x16.splat(0x10);
  const ones = ones16();
  const g0 = groupBase(as, T, nb);
  const tiled = tiledRows(T);
  for (let r = r0; r < r1; r += 4) {
    const gw = w + <usize> r * rowBytes;
    let t = 0;
    // prompts and batches: 8-row tiles over the activation's groups of 4 rows (the last tile
    // perhaps padded, tiledRows), then 4 rows a pass and single rows
    for (; t < tiled; t += 8) nibbleTile8(kind, w16, gw, nb, g0 + <usize> (t >> 2) * <usize> nb * Q8G, out, outStride, t, r, min<i32>(8, T - t));
    t = min<i32>(t, T);
    for (; t + 4 <= T; t += 4) {
      let s0 = f32x4.splat(0);
      let s1 = f32x4.splat(0);
      let s2 = f32x4.splat(0);
      let s3 = f32x4.splat(0);
      for (let b = 0; b < nb; b++) {
        const blk = gw + <usize> b * gb;
        const xd = scales4(blk);
        const xm = kind != 6 ? scales4(blk + 8) : xd;
        const h = five ? v128.load(blk + hv) : m4;
        const q0 = v128.load(blk + qv + 0);
        const q1 = v128.load(blk + qv + 16);
        const q2 = v128.load(blk + qv + 32);
        const q3 = v128.load(blk + qv + 48);
        const l0 = nibbleQuad(five, q0, h, 0, false, m4, m10);
        const l1 = nibbleQuad(five, q1, h, 1, false, m4, m10);
        const l2 = nibbleQuad(five, q2, h, 2, false, m4, m10);
        const l3 = nibbleQuad(five, q3, h, 3, false, m4, m10);
        const h0 = nibbleQuad(five, q0, h, 0, true, m4, m10);
        const h1 = nibbleQuad(five, q1, h, 1, true, m4, m10);
        const h2 = nibbleQuad(five, q2, h, 2, true, m4, m10);
        const h3 = nibbleQuad(five, q3, h, 3, true, m4, m10);
        const i0 = <usize> (t * nb + b);
        const i1 = i0 + <usize> nb;
        const i2 = i1 + <usize> nb;
        const i3 = i2 + <usize> nb;
        s0 = blockStep(kind, s0, nibbleDots(w16, five, aq + (i0 << 5), l0, l1, l2, l3, h0, h1, h2, h3, ones), xd, xm, ad, as, i0);
        s1 = blockStep(kind, s1, nibbleDots(w16, five, aq + (i1 << 5), l0, l1, l2, l3, h0, h1, h2, h3, ones), xd, xm, ad, as, i1);
        s2 = blockStep(kind, s2, nibbleDots(w16, five, aq + (i2 << 5), l0, l1, l2, l3, h0, h1, h2, h3, ones), xd, xm, ad, as, i2);
        s3 = blockStep(kind, s3, nibbleDots(w16, five, aq + (i3 << 5), l0, l1, l2, l3, h0, h1, h2, h3, ones), xd, xm, ad, as, i3);
      }
      storeRows4(out, outStride, t, r, s0);
      storeRows4(out, outStride, t + 1, r, s1);
      storeRows4(out, outStride, t + 2, r, s2);
      storeRows4(out, outStride, t + 3, r, s3);
    }
    for (; t < T; t++) {
      let s0 = f32x4.splat(0);
      for (let b = 0; b < nb; b++) {
        const blk = gw + <usize> b * gb;
        const xd = scales4(blk);
        const xm = kind != 6 ? scales4(blk + 8) : xd;
        const h = five ? v128.load(blk + hv) : m4;
        const q0 = v128.load(blk + qv + 0);
        const q1 = v128.load(blk + qv + 16);
        const q2 = v128.load(blk + qv + 32);
        const q3 = v128.load(blk + qv + 48);
        const i0 = <usize> (t * nb + b);
        const sumi = nibbleDots(
          w16, five, aq + (i0 << 5), nibbleQuad(five, q0, h, 0, false, m4, m10), nibbleQuad(five, q1, h, 1, false, m4, m10),
          nibbleQuad(five, q2, h, 2, false, m4, m10), nibbleQuad(five, q3, h, 3, false, m4, m10), nibbleQuad(five, q0, h, 0, true, m4, m10),
          nibbleQuad(five, q1, h, 1, true, m4, m10), nibbleQuad(five, q2, h, 2, true, m4, m10), nibbleQuad(five, q3, h, 3, true, m4, m10), ones,
        );
        s0 = blockStep(kind, s0, sumi, xd, xm, ad, as, i0);
      }
      storeRows4(out, outStride, t, r, s0);
    }
  }
}

// 4 weight rows (one group at gw of a kind 3, 6 or 7 matrix) × 8 activation rows (groups at ag and
// ag + nb·Q8G, as q40Tile8): each weight row's unpacked quad is broadcast once for 8 activation
// rows (the relaxed dot's 7-bit operand), the signed activation quants of 4 rows the first; lanes
// = activation rows. A real loop over the block's 4 nibble quads, each pass both its low and high
// nibbles (elements 4k.. and 16 + 4k..), their 5th bits from two copies of the block's 5th-bit
// vector shifted one bit further each pass (bit k to bit 4: `lo`, bit 4 + k: `hi`). w16
// (dotWidens): each pass's two dots of a row summed as i16 and widened by pmaddwd against ones.
// Then the float steps of ggml's order with the activation rows' scales (Q8G's 128) and, for Q5_0,
// the sums' correction −16Σq (Q8G's −128Σq >> 3, exact) or, for Q4_1 and Q5_1 (Q8_1 activations),
// the rows' float sums (Q8G's 144).
@inline function nibbleTile8(
  kind: i32, w16: bool, gw: usize, nb: i32, ag: usize, out: usize, outStride: i32, t: i32, r: i32,
  nt: i32,
): void {
  const gb = nibbleGroupBytes(kind);
  const five = kind != 3;
  const hv: usize = kind == 6 ? 8 : 16;
  const qv = hv + (five ? 16 : 0);
  const m4 = mask4();
  const m10 = i8x16.splat(0x10);
  const ones = ones16();
  let s00 = f32x4.splat(0), s01 = f32x4.splat(0), s10 = f32x4.splat(0), s11 = f32x4.splat(0);
  let s20 = f32x4.splat(0), s21 = f32x4.splat(0), s30 = f32x4.splat(0), s31 = f32x4.splat(0);
  const gstride = <usize> nb * Q8G;
  for (let b = 0; b < nb; b++) {
    const blk = gw + <usize> b * gb;
    const a0 = ag + <usize> b * Q8G;
    const a1 = a0 + gstride;
    let c00 = i32x4.splat(0), c01 = i32x4.splat(0), c10 = i32x4.splat(0), c11 = i32x4.splat(0);
    let c20 = i32x4.splat(0), c21 = i32x4.splat(0), c30 = i32x4.splat(0), c31 = i32x4.splat(0);
    const h = five ? v128.load(blk + hv) : m4;
    let hl = i16x8.shl(h, 4);
    let hh = h;
    for (let k: usize = 0; k < 64; k += 16) {
      const q = v128.load(blk + qv + k);
      let lo = v128.and(q, m4);
      let hi = v128.and(i16x8.shr_u(q, 4), m4);
      if (five) {
        lo = v128.or(lo, v128.and(hl, m10));
        hi = v128.or(hi, v128.and(hh, m10));
        hl = i16x8.shr_u(hl, 1);
        hh = i16x8.shr_u(hh, 1);
      }
      const xl0 = v128.load(a0 + k);
      const xl1 = v128.load(a1 + k);
      const xh0 = v128.load(a0 + 64 + k);
      const xh1 = v128.load(a1 + 64 + k);
      let bl = v128.shuffle<i32>(lo, lo, 0, 0, 0, 0);
      let bh = v128.shuffle<i32>(hi, hi, 0, 0, 0, 0);
      c00 = nibbleTileDot(w16, c00, xl0, bl, xh0, bh, ones);
      c01 = nibbleTileDot(w16, c01, xl1, bl, xh1, bh, ones);
      bl = v128.shuffle<i32>(lo, lo, 1, 1, 1, 1);
      bh = v128.shuffle<i32>(hi, hi, 1, 1, 1, 1);
      c10 = nibbleTileDot(w16, c10, xl0, bl, xh0, bh, ones);
      c11 = nibbleTileDot(w16, c11, xl1, bl, xh1, bh, ones);
      bl = v128.shuffle<i32>(lo, lo, 2, 2, 2, 2);
      bh = v128.shuffle<i32>(hi, hi, 2, 2, 2, 2);
      c20 = nibbleTileDot(w16, c20, xl0, bl, xh0, bh, ones);
      c21 = nibbleTileDot(w16, c21, xl1, bl, xh1, bh, ones);
      bl = v128.shuffle<i32>(lo, lo, 3, 3, 3, 3);
      bh = v128.shuffle<i32>(hi, hi, 3, 3, 3, 3);
      c30 = nibbleTileDot(w16, c30, xl0, bl, xh0, bh, ones);
      c31 = nibbleTileDot(w16, c31, xl1, bl, xh1, bh, ones);
    }
    const xd = scales4(blk);
    const xm = kind != 6 ? scales4(blk + 8) : xd;
    const y0 = v128.load(a0 + 128);
    const y1 = v128.load(a1 + 128);
    // Q5_0: the sums' correction −16Σq; Q4_1, Q5_1: the activation rows' float sums
    const z0 = kind == 6 ? i32x4.shr_s(v128.load(a0 + 144), 3) : v128.load(a0 + 144);
    const z1 = kind == 6 ? i32x4.shr_s(v128.load(a1 + 144), 3) : v128.load(a1 + 144);
    let x = v128.shuffle<i32>(xd, xd, 0, 0, 0, 0);
    let m = v128.shuffle<i32>(xm, xm, 0, 0, 0, 0);
    s00 = nibbleTileFloat(kind, s00, c00, x, m, y0, z0);
    s01 = nibbleTileFloat(kind, s01, c01, x, m, y1, z1);
    x = v128.shuffle<i32>(xd, xd, 1, 1, 1, 1);
    m = v128.shuffle<i32>(xm, xm, 1, 1, 1, 1);
    s10 = nibbleTileFloat(kind, s10, c10, x, m, y0, z0);
    s11 = nibbleTileFloat(kind, s11, c11, x, m, y1, z1);
    x = v128.shuffle<i32>(xd, xd, 2, 2, 2, 2);
    m = v128.shuffle<i32>(xm, xm, 2, 2, 2, 2);
    s20 = nibbleTileFloat(kind, s20, c20, x, m, y0, z0);
    s21 = nibbleTileFloat(kind, s21, c21, x, m, y1, z1);
    x = v128.shuffle<i32>(xd, xd, 3, 3, 3, 3);
    m = v128.shuffle<i32>(xm, xm, 3, 3, 3, 3);
    s30 = nibbleTileFloat(kind, s30, c30, x, m, y0, z0);
    s31 = nibbleTileFloat(kind, s31, c31, x, m, y1, z1);
  }
  transposeStore(out, outStride, t, r, s00, s10, s20, s30, nt);
  transposeStore(out, outStride, t + 4, r, s01, s11, s21, s31, nt - 4);
}

// c plus the dots of activation quads xl, xh against the broadcast weight quads bl, bh.
@inline function nibbleTileDot(w16: bool, c: v128, xl: v128, bl: v128, xh: v128, bh: v128, ones: v128): v128 {
  if (w16) {
    const p = i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(xl, bl), i16x8.relaxed_dot_i8x16_i7x16_s(xh, bh));
    return i32x4.add(c, i32x4.dot_i16x8_s(p, ones));
  }
  return i32x4.relaxed_dot_i8x16_i7x16_add_s(xh, bh, i32x4.relaxed_dot_i8x16_i7x16_add_s(xl, bl, c));
}

// One block's float step (ggml's order) for a weight row (its scale x and min m in every lane)
// against 4 activation rows (lanes): their integer dots c, scales y and z, Q5_0's correction −16Σq
// (i32) or Q4_1's and Q5_1's float sums.
@inline function nibbleTileFloat(kind: i32, s: v128, c: v128, x: v128, m: v128, y: v128, z: v128): v128 {
  if (kind == 6) {
    // (xd * yd) * (sumi - 16Σa)
    return f32x4.add(s, f32x4.mul(f32x4.mul(x, y), f32x4.convert_i32x4_s(i32x4.add(c, z))));
  }
  // (xd * yd) * sumi + xm * ys
  return f32x4.add(s, f32x4.add(f32x4.mul(f32x4.mul(x, y), f32x4.convert_i32x4_s(c)), f32x4.mul(m, z)));
}

// nibbleMatmul's forms, each a function of its own (see q4kMatmul16).
@noinline function q41Matmul16(w: usize, rb: i32, nb: i32, aq: usize, ad: usize, as: usize, T: i32, out: usize, os: i32, r0: i32, r1: i32): void {
  nibbleMatmul(3, true, w, rb, nb, aq, ad, as, T, out, os, r0, r1);
}
@noinline function q41Matmul32(w: usize, rb: i32, nb: i32, aq: usize, ad: usize, as: usize, T: i32, out: usize, os: i32, r0: i32, r1: i32): void {
  nibbleMatmul(3, false, w, rb, nb, aq, ad, as, T, out, os, r0, r1);
}
@noinline function q50Matmul16(w: usize, rb: i32, nb: i32, aq: usize, ad: usize, as: usize, T: i32, out: usize, os: i32, r0: i32, r1: i32): void {
  nibbleMatmul(6, true, w, rb, nb, aq, ad, as, T, out, os, r0, r1);
}
@noinline function q50Matmul32(w: usize, rb: i32, nb: i32, aq: usize, ad: usize, as: usize, T: i32, out: usize, os: i32, r0: i32, r1: i32): void {
  nibbleMatmul(6, false, w, rb, nb, aq, ad, as, T, out, os, r0, r1);
}
@noinline function q51Matmul16(w: usize, rb: i32, nb: i32, aq: usize, ad: usize, as: usize, T: i32, out: usize, os: i32, r0: i32, r1: i32): void {
  nibbleMatmul(7, true, w, rb, nb, aq, ad, as, T, out, os, r0, r1);
}
@noinline function q51Matmul32(w: usize, rb: i32, nb: i32, aq: usize, ad: usize, as: usize, T: i32, out: usize, os: i32, r0: i32, r1: i32): void {
  nibbleMatmul(7, false, w, rb, nb, aq, ad, as, T, out, os, r0, r1);
}

// ----------------------------------------------------------------------------- K-quant matmuls

// Each K-quant has its own kernel over 4-row groups of its weights (mmK): Q2_K, Q4_K and Q6_K in
// this engine's order or ggml's per-super-block one, Q3_K and Q5_K in ggml's generic class-lane
// order (see their sections). Until 2026-12-06 Q2_K, Q3_K and Q5_K took a generic path: each
// weight row decoded into i16 with its scales, then dotted with each activation row.

@inline function kScaleMin(sc: usize, j: i32, isMin: bool): i32 {
  // get_scale_min_k4
  if (j < 4) {
    return isMin ? <i32> load<u8>(sc + j + 4) & 63 : <i32> load<u8>(sc + j) & 63;
  }
  if (isMin) {
    return (<i32> load<u8>(sc + j + 4) >> 4) | ((<i32> load<u8>(sc + j) >> 6) << 4);
  }
  return (<i32> load<u8>(sc + j + 4) & 0xf) | ((<i32> load<u8>(sc + j - 4) >> 6) << 4);
}

/** The high nibbles of 16 bytes (i8x16.shr_u costs several x64 instructions; this two). */
@inline function hiNib(v: v128): v128 {
  return v128.and(i16x8.shr_u(v, 4), i8x16.splat(0x0f));
}

/** hiNib with the 0x0f mask passed in (mask4()). */
@inline function hiNibM(v: v128, m4: v128): v128 {
  return v128.and(i16x8.shr_u(v, 4), m4);
}

// ----------------------------------------------------------------------------- Q4_K, quad groups

// Q4_K sums in this engine's order (kernels/quant/kquants_vecdot.ts, vecDotQ4K): per super-block
// the exact integers sumi = Σ_j sc_j·Σ q·a (j: the 8 sub-blocks of 32 elements) and
// summ = Σ_j m_j·bsum_j, then sumf += (d·yd)·sumi − (dmin·yd)·summ. ggml's generic order keeps 8
// class lanes (element index mod 8), which a relaxed dot summing 4 products per lane cannot
// keep; this order lets the nibbles (0..15, the dot's 7-bit operand) run as Q4_0's do: one
// vpdpbusd per 16 multiply-adds, a sub-block's sums scaled once by i32x4.mul.
//
// Weights (repackQ4K): full 4-row groups, per super-block 576 bytes: the 4 rows' 16-byte headers
// (d, dmin, scales[12]) at 16r, then byte quad k (k = 0..31) of row r's quants at 64 + 16k + 4r.
// Quads 8p..8p+7 hold sub-block 2p in their low nibbles and 2p + 1 in their high ones (elements
// 4(k − 8p)..+3 of each). Rows after the full groups stay as the file has them (q4kRawRow).
//
// Activation (permuteQ4KAct): the rows of the 8-row and 4-row tiles (q4kRows) in groups of 4,
// Q8KG bytes per super-block: quad q of sub-block j of row t at 128j + 16q + 4t, the 4 rows' yd
// (f32) at 1024, their sub-block sums as i16 pairs [b_2p t0, b_2p+1 t0, b_2p t1, …] at
// 1040 + 16p; after the groups, bs16 [T·nb × 8] i16: every row's sub-block sums. Rows outside the
// tiles read the Q8_K quants as they are.
const Q8KG: usize = 1104;

// Rows left (T mod 8) from which a Q4_K matmul takes one more 8-row tile, padded with zero rows
// (5 rows: a padded tile 0.88-0.89× the time of a 4-row tile and a single row), and those from
// which it takes a 4-row tile (q4kTile4; 3 rows, padded: 0.68-0.74× three single rows). 2 rows
// take the 2-row pass (q4kgRow2: 0.66-0.69× two single rows; a padded 4-row tile was 1.1× them),
// 1 the single-row one (bench/tools/q4k_tile.ts). Every form takes a weight group from memory once for
// all of these rows (the single rows, too, re-read it from L1): what they save is work, the
// group's header decoded and its nibbles unpacked once rather than once per row.
const Q4K_PAD8 = 5;
const Q4K_PAD4 = 3;

// The activation rows in the Q4_K kernel's 8-row tiles (the last perhaps padded, Q4K_PAD8).
@inline function q4kTiled(T: i32): i32 {
  return (T & 7) >= Q4K_PAD8 ? (T + 7) & ~7 : T & ~7;
}

// The activation rows in Q4_K tiles: those of the 8-row tiles, and 4 more where Q4K_PAD4 or more
// are left after them.
@inline function q4kRows(T: i32): i32 {
  const tiled = q4kTiled(T);
  return T - tiled >= Q4K_PAD4 ? tiled + 4 : tiled;
}
const Q4KG: usize = 576;
const Q4K_CONSTS: usize = memory.data<i32>([
  0x3f3f3f3f, 0x3f3f3f3f, 0x3f3f3f3f, 0x3f3f3f3f,
  0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f,
  0x03030303, 0x03030303, 0x03030303, 0x03030303,
  0xff, 0xff, 0xff, 0xff,
], 16);

/** Lay out the full 4-row groups (nGroups from w) of a Q4_K matrix as quads (above), in place. */
export function repackQ4K(w: usize, rowBytes: i32, nGroups: i32, tmp: usize): void {
  const nb = rowBytes / 144;
  const gb = <usize> rowBytes << 2;
  for (let g = 0; g < nGroups; g++) {
    const gw = w + <usize> g * gb;
    memory.copy(tmp, gw, gb);
    for (let i = 0; i < nb; i++) {
      const dst = gw + <usize> i * Q4KG;
      for (let r = 0; r < 4; r++) {
        const src = tmp + <usize> r * rowBytes + <usize> i * 144;
        v128.store(dst + (<usize> r << 4), v128.load(src));
        for (let k = 0; k < 32; k++) {
          store<u32>(dst + 64 + (<usize> k << 4) + (<usize> r << 2), load<u32>(src + 16 + (<usize> k << 2)));
        }
      }
    }
  }
}

/**
 * The Q4_K kernel's activation from T Q8_K rows (qs, ad, bsums of quantizeQ8K) into out: the
 * tiles' rows in Q8KG groups (padding rows zero), then bs16 for every row (see above).
 */
export function permuteQ4KAct(qs: usize, ad: usize, bsums: usize, out: usize, n: i32, T: i32): void {
  const nb = n >> 8;
  const G = q4kRows(T) >> 2;
  for (let g = 0; g < G; g++) {
    const t0 = g << 2;
    for (let i = 0; i < nb; i++) {
      const base = out + <usize> (g * nb + i) * Q8KG;
      for (let j = 0; j < 16; j++) {
        // 16 elements (4 quads) of each of the 4 rows, transposed to quad-major
        const off = (<usize> i << 8) + (<usize> j << 4);
        let v0 = i32x4.splat(0), v1 = i32x4.splat(0), v2 = i32x4.splat(0), v3 = i32x4.splat(0);
        if (t0 < T) v0 = v128.load(qs + <usize> t0 * <usize> n + off);
        if (t0 + 1 < T) v1 = v128.load(qs + <usize> (t0 + 1) * <usize> n + off);
        if (t0 + 2 < T) v2 = v128.load(qs + <usize> (t0 + 2) * <usize> n + off);
        if (t0 + 3 < T) v3 = v128.load(qs + <usize> (t0 + 3) * <usize> n + off);
        const ab0 = v128.shuffle<i32>(v0, v1, 0, 4, 1, 5);
        const ab1 = v128.shuffle<i32>(v0, v1, 2, 6, 3, 7);
        const cd0 = v128.shuffle<i32>(v2, v3, 0, 4, 1, 5);
        const cd1 = v128.shuffle<i32>(v2, v3, 2, 6, 3, 7);
        const o = base + (<usize> j << 6);
        v128.store(o, v128.shuffle<i32>(ab0, cd0, 0, 1, 4, 5));
        v128.store(o + 16, v128.shuffle<i32>(ab0, cd0, 2, 3, 6, 7));
        v128.store(o + 32, v128.shuffle<i32>(ab1, cd1, 0, 1, 4, 5));
        v128.store(o + 48, v128.shuffle<i32>(ab1, cd1, 2, 3, 6, 7));
      }
      for (let t = 0; t < 4; t++) {
        const live = t0 + t < T;
        const bi = <usize> ((t0 + t) * nb + i);
        store<f32>(base + 1024 + (<usize> t << 2), live ? load<f32>(ad + (bi << 2)) : 0);
        for (let j = 0; j < 8; j++) {
          const b = bsums + (bi << 6) + (<usize> j << 3);
          const s = live ? load<i32>(b) + load<i32>(b + 4) : 0;
          store<i16>(base + 1040 + (<usize> (j >> 1) << 4) + (<usize> t << 2) + (<usize> (j & 1) << 1), <i16> s);
        }
      }
    }
  }
  subBlockSums16(bsums, out + <usize> G * <usize> nb * Q8KG, (n >> 5) * T);
}

// The 32-element sums of `subs` Q8_K sub-blocks (their two 16-element sums, bsums of
// quantizeQ8K) as i16 at bs16.
@inline function subBlockSums16(bsums: usize, bs16: usize, subs: i32): void {
  for (let s = 0; s < subs; s++) {
    const b = bsums + (<usize> s << 3);
    store<i16>(bs16 + (<usize> s << 1), <i16> (load<i32>(b) + load<i32>(b + 4)));
  }
}

// A group's super-block header at blk, decoded for its 4 rows (lanes) into scr: the sub-block
// scales as i32 (sub-block j at scr + 16j), the mins as i16 pairs [m_2p, m_2p+1] (pair p at
// scr + 128 + 16p), d and dmin as f32 (scr + 192, scr + 208). get_scale_min_k4 on words u0..u2.
@inline function q4kgHeader(blk: usize, scr: usize): void {
  const h0 = v128.load(blk);
  const h1 = v128.load(blk + 16);
  const h2 = v128.load(blk + 32);
  const h3 = v128.load(blk + 48);
  const ab0 = v128.shuffle<i32>(h0, h1, 0, 4, 1, 5);
  const ab1 = v128.shuffle<i32>(h0, h1, 2, 6, 3, 7);
  const cd0 = v128.shuffle<i32>(h2, h3, 0, 4, 1, 5);
  const cd1 = v128.shuffle<i32>(h2, h3, 2, 6, 3, 7);
  const dd = v128.shuffle<i32>(ab0, cd0, 0, 1, 4, 5);
  const u0 = v128.shuffle<i32>(ab0, cd0, 2, 3, 6, 7);
  const u1 = v128.shuffle<i32>(ab1, cd1, 0, 1, 4, 5);
  const u2 = v128.shuffle<i32>(ab1, cd1, 2, 3, 6, 7);
  const m3f = v128.load(Q4K_CONSTS);
  const m0f = v128.load(Q4K_CONSTS + 16);
  const m03 = v128.load(Q4K_CONSTS + 32);
  const mff = v128.load(Q4K_CONSTS + 48);
  const sLo = v128.and(u0, m3f);
  const sHi = v128.or(v128.and(u2, m0f), i32x4.shl(v128.and(i32x4.shr_u(u0, 6), m03), 4));
  const mLo = v128.and(u1, m3f);
  const mHi = v128.or(v128.and(i32x4.shr_u(u2, 4), m0f), i32x4.shl(v128.and(i32x4.shr_u(u1, 6), m03), 4));
  v128.store(scr, v128.and(sLo, mff));
  v128.store(scr + 16, v128.and(i32x4.shr_u(sLo, 8), mff));
  v128.store(scr + 32, v128.and(i32x4.shr_u(sLo, 16), mff));
  v128.store(scr + 48, i32x4.shr_u(sLo, 24));
  v128.store(scr + 64, v128.and(sHi, mff));
  v128.store(scr + 80, v128.and(i32x4.shr_u(sHi, 8), mff));
  v128.store(scr + 96, v128.and(i32x4.shr_u(sHi, 16), mff));
  v128.store(scr + 112, i32x4.shr_u(sHi, 24));
  const eL = i16x8.extend_low_i8x16_u(mLo);
  const eH = i16x8.extend_high_i8x16_u(mLo);
  v128.store(scr + 128, v128.shuffle<i32>(eL, eH, 0, 2, 4, 6));
  v128.store(scr + 144, v128.shuffle<i32>(eL, eH, 1, 3, 5, 7));
  const fL = i16x8.extend_low_i8x16_u(mHi);
  const fH = i16x8.extend_high_i8x16_u(mHi);
  v128.store(scr + 160, v128.shuffle<i32>(fL, fH, 0, 2, 4, 6));
  v128.store(scr + 176, v128.shuffle<i32>(fL, fH, 1, 3, 5, 7));
  v128.store(scr + 192, halvesToF32C(dd));
  v128.store(scr + 208, halvesToF32C(i32x4.shr_u(dd, 16)));
}

// summ of the 4 weight rows (lanes; their min pairs in the header q4kgHeader decoded at
// scr + 128) against one activation row's 8 sub-block sums (i16) at bs, pair p in every lane.
@inline function kgMins(scr: usize, bs: usize): v128 {
  const b = v128.load(bs);
  return i32x4.add(
    i32x4.add(
      i32x4.dot_i16x8_s(v128.load(scr + 128), v128.shuffle<i32>(b, b, 0, 0, 0, 0)),
      i32x4.dot_i16x8_s(v128.load(scr + 144), v128.shuffle<i32>(b, b, 1, 1, 1, 1)),
    ),
    i32x4.add(
      i32x4.dot_i16x8_s(v128.load(scr + 160), v128.shuffle<i32>(b, b, 2, 2, 2, 2)),
      i32x4.dot_i16x8_s(v128.load(scr + 176), v128.shuffle<i32>(b, b, 3, 3, 3, 3)),
    ),
  );
}

@inline function madd32(t: v128, c: v128, s: v128): v128 {
  return i32x4.add(t, i32x4.mul(c, s));
}

// The Q4_K kernels' dots and scalings in the engine's form (dotWidens): W16 sums up to 8 dots per
// sub-block as i16 (a lane ≤ 8·2·15·128 < 2^15) and applies the sub-block's scale (≤ 63, both
// halves of each i32 lane: kpair) with pmaddwd, which also widens to i32; otherwise i32 relaxed
// dots and i32x4.mul. The same exact integers either way.
@inline function kdot(W16: bool, x: v128, b: v128, c: v128): v128 {
  if (W16) return i16x8.add(c, i16x8.relaxed_dot_i8x16_i7x16_s(x, b));
  return i32x4.relaxed_dot_i8x16_i7x16_add_s(x, b, c);
}
// kdot into nothing: the i16 form's dot alone (kdot would add it to zero).
@inline function kdot0(W16: bool, x: v128, b: v128): v128 {
  if (W16) return i16x8.relaxed_dot_i8x16_i7x16_s(x, b);
  return i32x4.relaxed_dot_i8x16_i7x16_add_s(x, b, i32x4.splat(0));
}

@inline function kmadd(W16: bool, t: v128, c: v128, s: v128): v128 {
  if (W16) return i32x4.add(t, i32x4.dot_i16x8_s(c, s));
  return madd32(t, c, s);
}
@inline function kpair(W16: bool, sc: v128): v128 {
  if (W16) return v128.or(sc, i32x4.shl(sc, 16));
  return sc;
}

// summ of weight row r (lane r of the header's min pairs at scr + 128) for the 4 activation rows
// of the group at a (lanes).
@inline function q4kgMins(scr: usize, r: i32, a: usize): v128 {
  let m0 = v128.load(scr + 128), m1 = v128.load(scr + 144);
  let m2 = v128.load(scr + 160), m3 = v128.load(scr + 176);
  if (r == 0) {
    m0 = v128.shuffle<i32>(m0, m0, 0, 0, 0, 0); m1 = v128.shuffle<i32>(m1, m1, 0, 0, 0, 0);
    m2 = v128.shuffle<i32>(m2, m2, 0, 0, 0, 0); m3 = v128.shuffle<i32>(m3, m3, 0, 0, 0, 0);
  } else if (r == 1) {
    m0 = v128.shuffle<i32>(m0, m0, 1, 1, 1, 1); m1 = v128.shuffle<i32>(m1, m1, 1, 1, 1, 1);
    m2 = v128.shuffle<i32>(m2, m2, 1, 1, 1, 1); m3 = v128.shuffle<i32>(m3, m3, 1, 1, 1, 1);
  } else if (r == 2) {
    m0 = v128.shuffle<i32>(m0, m0, 2, 2, 2, 2); m1 = v128.shuffle<i32>(m1, m1, 2, 2, 2, 2);
    m2 = v128.shuffle<i32>(m2, m2, 2, 2, 2, 2); m3 = v128.shuffle<i32>(m3, m3, 2, 2, 2, 2);
  } else {
    m0 = v128.shuffle<i32>(m0, m0, 3, 3, 3, 3); m1 = v128.shuffle<i32>(m1, m1, 3, 3, 3, 3);
    m2 = v128.shuffle<i32>(m2, m2, 3, 3, 3, 3); m3 = v128.shuffle<i32>(m3, m3, 3, 3, 3, 3);
  }
  const p0 = i32x4.dot_i16x8_s(v128.load(a + 1040), m0);
  const p1 = i32x4.dot_i16x8_s(v128.load(a + 1056), m1);
  const p2 = i32x4.dot_i16x8_s(v128.load(a + 1072), m2);
  const p3 = i32x4.dot_i16x8_s(v128.load(a + 1088), m3);
  return i32x4.add(i32x4.add(p0, p1), i32x4.add(p2, p3));
}

// sumf + ((d·y)·sumi − (dmin·y)·summ): a super-block's float step (d, dm: in every lane).
@inline function q4kFloat(sumf: v128, d: v128, dm: v128, y: v128, sumi: v128, summ: v128): v128 {
  return f32x4.add(sumf, f32x4.sub(
    f32x4.mul(f32x4.mul(d, y), f32x4.convert_i32x4_s(sumi)),
    f32x4.mul(f32x4.mul(dm, y), f32x4.convert_i32x4_s(summ)),
  ));
}

// 4 weight rows (the group at gw) × 8 activation rows (Q8KG groups at ag and ag + nb·Q8KG), as
// q40Tile8: each weight row's nibble quad broadcast once for 8 activation rows, lanes =
// activation rows; a sub-block's 8 sums stay in registers, then get its scale (i32x4.mul) into
// the super-block's. Scratch at scr: the decoded header (q4kgHeader).
@inline function q4kTile8(W16: bool, gw: usize, nb: i32, ag: usize, out: usize, outStride: i32, t: i32, r: i32, nt: i32, scr: usize): void {
  const m4 = mask4();
  let s00 = f32x4.splat(0), s01 = f32x4.splat(0), s10 = f32x4.splat(0), s11 = f32x4.splat(0);
  let s20 = f32x4.splat(0), s21 = f32x4.splat(0), s30 = f32x4.splat(0), s31 = f32x4.splat(0);
  const gstride = <usize> nb * Q8KG;
  for (let i = 0; i < nb; i++) {
    const blk = gw + <usize> i * Q4KG;
    const a0 = ag + <usize> i * Q8KG;
    const a1 = a0 + gstride;
    q4kgHeader(blk, scr);
    let t00 = i32x4.splat(0), t01 = i32x4.splat(0), t10 = i32x4.splat(0), t11 = i32x4.splat(0);
    let t20 = i32x4.splat(0), t21 = i32x4.splat(0), t30 = i32x4.splat(0), t31 = i32x4.splat(0);
    for (let p: usize = 0; p < 4; p++) {
      const qb = blk + 64 + (p << 7);
      {
        // sub-block 2p: the low nibbles (real loops, as in q40Tile8)
        const xa = a0 + (p << 8);
        const xb = a1 + (p << 8);
        let c00 = i32x4.splat(0), c01 = i32x4.splat(0), c10 = i32x4.splat(0), c11 = i32x4.splat(0);
        let c20 = i32x4.splat(0), c21 = i32x4.splat(0), c30 = i32x4.splat(0), c31 = i32x4.splat(0);
        for (let k: usize = 0; k < 128; k += 16) {
          const q = v128.and(v128.load(qb + k), m4);
          const x0 = v128.load(xa + k);
          const x1 = v128.load(xb + k);
          const b0 = v128.shuffle<i32>(q, q, 0, 0, 0, 0);
          c00 = kdot(W16, x0, b0, c00);
          c01 = kdot(W16, x1, b0, c01);
          const b1 = v128.shuffle<i32>(q, q, 1, 1, 1, 1);
          c10 = kdot(W16, x0, b1, c10);
          c11 = kdot(W16, x1, b1, c11);
          const b2 = v128.shuffle<i32>(q, q, 2, 2, 2, 2);
          c20 = kdot(W16, x0, b2, c20);
          c21 = kdot(W16, x1, b2, c21);
          const b3 = v128.shuffle<i32>(q, q, 3, 3, 3, 3);
          c30 = kdot(W16, x0, b3, c30);
          c31 = kdot(W16, x1, b3, c31);
        }
        const sc = kpair(W16, v128.load(scr + (p << 5)));
        const e0 = v128.shuffle<i32>(sc, sc, 0, 0, 0, 0);
        t00 = kmadd(W16, t00, c00, e0);
        t01 = kmadd(W16, t01, c01, e0);
        const e1 = v128.shuffle<i32>(sc, sc, 1, 1, 1, 1);
        t10 = kmadd(W16, t10, c10, e1);
        t11 = kmadd(W16, t11, c11, e1);
        const e2 = v128.shuffle<i32>(sc, sc, 2, 2, 2, 2);
        t20 = kmadd(W16, t20, c20, e2);
        t21 = kmadd(W16, t21, c21, e2);
        const e3 = v128.shuffle<i32>(sc, sc, 3, 3, 3, 3);
        t30 = kmadd(W16, t30, c30, e3);
        t31 = kmadd(W16, t31, c31, e3);
      }
      {
        // sub-block 2p + 1: the high nibbles
        const xa = a0 + (p << 8) + 128;
        const xb = a1 + (p << 8) + 128;
        let c00 = i32x4.splat(0), c01 = i32x4.splat(0), c10 = i32x4.splat(0), c11 = i32x4.splat(0);
        let c20 = i32x4.splat(0), c21 = i32x4.splat(0), c30 = i32x4.splat(0), c31 = i32x4.splat(0);
        for (let k: usize = 0; k < 128; k += 16) {
          const q = hiNibM(v128.load(qb + k), m4);
          const x0 = v128.load(xa + k);
          const x1 = v128.load(xb + k);
          const b0 = v128.shuffle<i32>(q, q, 0, 0, 0, 0);
          c00 = kdot(W16, x0, b0, c00);
          c01 = kdot(W16, x1, b0, c01);
          const b1 = v128.shuffle<i32>(q, q, 1, 1, 1, 1);
          c10 = kdot(W16, x0, b1, c10);
          c11 = kdot(W16, x1, b1, c11);
          const b2 = v128.shuffle<i32>(q, q, 2, 2, 2, 2);
          c20 = kdot(W16, x0, b2, c20);
          c21 = kdot(W16, x1, b2, c21);
          const b3 = v128.shuffle<i32>(q, q, 3, 3, 3, 3);
          c30 = kdot(W16, x0, b3, c30);
          c31 = kdot(W16, x1, b3, c31);
        }
        const sc = kpair(W16, v128.load(scr + (p << 5) + 16));
        const e0 = v128.shuffle<i32>(sc, sc, 0, 0, 0, 0);
        t00 = kmadd(W16, t00, c00, e0);
        t01 = kmadd(W16, t01, c01, e0);
        const e1 = v128.shuffle<i32>(sc, sc, 1, 1, 1, 1);
        t10 = kmadd(W16, t10, c10, e1);
        t11 = kmadd(W16, t11, c11, e1);
        const e2 = v128.shuffle<i32>(sc, sc, 2, 2, 2, 2);
        t20 = kmadd(W16, t20, c20, e2);
        t21 = kmadd(W16, t21, c21, e2);
        const e3 = v128.shuffle<i32>(sc, sc, 3, 3, 3, 3);
        t30 = kmadd(W16, t30, c30, e3);
        t31 = kmadd(W16, t31, c31, e3);
      }
    }
    const y0 = v128.load(a0 + 1024);
    const y1 = v128.load(a1 + 1024);
    const dv = v128.load(scr + 192);
    const mv = v128.load(scr + 208);
    let d = v128.shuffle<i32>(dv, dv, 0, 0, 0, 0), dm = v128.shuffle<i32>(mv, mv, 0, 0, 0, 0);
    s00 = q4kFloat(s00, d, dm, y0, t00, q4kgMins(scr, 0, a0));
    s01 = q4kFloat(s01, d, dm, y1, t01, q4kgMins(scr, 0, a1));
    d = v128.shuffle<i32>(dv, dv, 1, 1, 1, 1), dm = v128.shuffle<i32>(mv, mv, 1, 1, 1, 1);
    s10 = q4kFloat(s10, d, dm, y0, t10, q4kgMins(scr, 1, a0));
    s11 = q4kFloat(s11, d, dm, y1, t11, q4kgMins(scr, 1, a1));
    d = v128.shuffle<i32>(dv, dv, 2, 2, 2, 2), dm = v128.shuffle<i32>(mv, mv, 2, 2, 2, 2);
    s20 = q4kFloat(s20, d, dm, y0, t20, q4kgMins(scr, 2, a0));
    s21 = q4kFloat(s21, d, dm, y1, t21, q4kgMins(scr, 2, a1));
    d = v128.shuffle<i32>(dv, dv, 3, 3, 3, 3), dm = v128.shuffle<i32>(mv, mv, 3, 3, 3, 3);
    s30 = q4kFloat(s30, d, dm, y0, t30, q4kgMins(scr, 3, a0));
    s31 = q4kFloat(s31, d, dm, y1, t31, q4kgMins(scr, 3, a1));
  }
  transposeStore(out, outStride, t, r, s00, s10, s20, s30, nt);
  transposeStore(out, outStride, t + 4, r, s01, s11, s21, s31, nt - 4);
}

// 4 weight rows (the group at gw) × the 4 activation rows of the Q8KG group at ag: q4kTile8 with
// one activation group, for the rows after the 8-row tiles (a few sessions decoding together, a
// batch's last rows; q4kRows): the group's weights are read once for 4 activation rows rather
// than once per row. Lanes = activation rows; the first nt stored.
@inline function q4kTile4(W16: bool, gw: usize, nb: i32, ag: usize, out: usize, outStride: i32, t: i32, r: i32, nt: i32, scr: usize): void {
  const m4 = mask4();
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0), s2 = f32x4.splat(0), s3 = f32x4.splat(0);
  for (let i = 0; i < nb; i++) {
    const blk = gw + <usize> i * Q4KG;
    const a0 = ag + <usize> i * Q8KG;
    q4kgHeader(blk, scr);
    let t0 = i32x4.splat(0), t1 = i32x4.splat(0), t2 = i32x4.splat(0), t3 = i32x4.splat(0);
    for (let p: usize = 0; p < 4; p++) {
      const qb = blk + 64 + (p << 7);
      const xa = a0 + (p << 8);
      // sub-blocks 2p (low nibbles) and 2p + 1 (high) in one pass: 8 sums fit here
      let c0 = i32x4.splat(0), c1 = i32x4.splat(0), c2 = i32x4.splat(0), c3 = i32x4.splat(0);
      let d0 = i32x4.splat(0), d1 = i32x4.splat(0), d2 = i32x4.splat(0), d3 = i32x4.splat(0);
      for (let k: usize = 0; k < 128; k += 16) {
        const v = v128.load(qb + k);
        const q = v128.and(v, m4);
        const h = hiNibM(v, m4);
        const x0 = v128.load(xa + k);
        const x1 = v128.load(xa + 128 + k);
        c0 = kdot(W16, x0, v128.shuffle<i32>(q, q, 0, 0, 0, 0), c0);
        d0 = kdot(W16, x1, v128.shuffle<i32>(h, h, 0, 0, 0, 0), d0);
        c1 = kdot(W16, x0, v128.shuffle<i32>(q, q, 1, 1, 1, 1), c1);
        d1 = kdot(W16, x1, v128.shuffle<i32>(h, h, 1, 1, 1, 1), d1);
        c2 = kdot(W16, x0, v128.shuffle<i32>(q, q, 2, 2, 2, 2), c2);
        d2 = kdot(W16, x1, v128.shuffle<i32>(h, h, 2, 2, 2, 2), d2);
        c3 = kdot(W16, x0, v128.shuffle<i32>(q, q, 3, 3, 3, 3), c3);
        d3 = kdot(W16, x1, v128.shuffle<i32>(h, h, 3, 3, 3, 3), d3);
      }
      const sc = kpair(W16, v128.load(scr + (p << 5)));
      const sd = kpair(W16, v128.load(scr + (p << 5) + 16));
      t0 = kmadd(W16, kmadd(W16, t0, c0, v128.shuffle<i32>(sc, sc, 0, 0, 0, 0)), d0, v128.shuffle<i32>(sd, sd, 0, 0, 0, 0));
      t1 = kmadd(W16, kmadd(W16, t1, c1, v128.shuffle<i32>(sc, sc, 1, 1, 1, 1)), d1, v128.shuffle<i32>(sd, sd, 1, 1, 1, 1));
      t2 = kmadd(W16, kmadd(W16, t2, c2, v128.shuffle<i32>(sc, sc, 2, 2, 2, 2)), d2, v128.shuffle<i32>(sd, sd, 2, 2, 2, 2));
      t3 = kmadd(W16, kmadd(W16, t3, c3, v128.shuffle<i32>(sc, sc, 3, 3, 3, 3)), d3, v128.shuffle<i32>(sd, sd, 3, 3, 3, 3));
    }
    const y = v128.load(a0 + 1024);
    const dv = v128.load(scr + 192);
    const mv = v128.load(scr + 208);
    s0 = q4kFloat(s0, v128.shuffle<i32>(dv, dv, 0, 0, 0, 0), v128.shuffle<i32>(mv, mv, 0, 0, 0, 0), y, t0, q4kgMins(scr, 0, a0));
    s1 = q4kFloat(s1, v128.shuffle<i32>(dv, dv, 1, 1, 1, 1), v128.shuffle<i32>(mv, mv, 1, 1, 1, 1), y, t1, q4kgMins(scr, 1, a0));
    s2 = q4kFloat(s2, v128.shuffle<i32>(dv, dv, 2, 2, 2, 2), v128.shuffle<i32>(mv, mv, 2, 2, 2, 2), y, t2, q4kgMins(scr, 2, a0));
    s3 = q4kFloat(s3, v128.shuffle<i32>(dv, dv, 3, 3, 3, 3), v128.shuffle<i32>(mv, mv, 3, 3, 3, 3), y, t3, q4kgMins(scr, 3, a0));
  }
  transposeStore(out, outStride, t, r, s0, s1, s2, s3, nt);
}

// One activation row (its Q8_K quants at a, scales at ad, sub-block sums at bs16) against the 4
// weight rows of the group at gw, lanes = weight rows: each activation quad broadcast and dotted
// with the 4 rows' quads (Q4_0's single-row form); decode. One sequential weight stream per
// thread, as the hardware prefetcher wants.
@inline function q4kgRow(W16: bool, gw: usize, nb: i32, a: usize, ad: usize, bs16: usize, scr: usize): v128 {
  const m4 = mask4();
  let sumf = f32x4.splat(0);
  for (let i = 0; i < nb; i++) {
    const blk = gw + <usize> i * Q4KG;
    const qa = a + (<usize> i << 8);
    q4kgHeader(blk, scr);
    let tot = i32x4.splat(0);
    for (let p: usize = 0; p < 4; p++) {
      const qb = blk + 64 + (p << 7);
      const xa0 = v128.load(qa + (p << 6));
      const xa1 = v128.load(qa + (p << 6) + 16);
      const xb0 = v128.load(qa + (p << 6) + 32);
      const xb1 = v128.load(qa + (p << 6) + 48);
      let v = v128.load(qb);
      let cA = kdot(W16, v128.shuffle<i32>(xa0, xa0, 0, 0, 0, 0), v128.and(v, m4), i32x4.splat(0));
      let cB = kdot(W16, v128.shuffle<i32>(xb0, xb0, 0, 0, 0, 0), hiNibM(v, m4), i32x4.splat(0));
      v = v128.load(qb + 16);
      cA = kdot(W16, v128.shuffle<i32>(xa0, xa0, 1, 1, 1, 1), v128.and(v, m4), cA);
      cB = kdot(W16, v128.shuffle<i32>(xb0, xb0, 1, 1, 1, 1), hiNibM(v, m4), cB);
      v = v128.load(qb + 32);
      cA = kdot(W16, v128.shuffle<i32>(xa0, xa0, 2, 2, 2, 2), v128.and(v, m4), cA);
      cB = kdot(W16, v128.shuffle<i32>(xb0, xb0, 2, 2, 2, 2), hiNibM(v, m4), cB);
      v = v128.load(qb + 48);
      cA = kdot(W16, v128.shuffle<i32>(xa0, xa0, 3, 3, 3, 3), v128.and(v, m4), cA);
      cB = kdot(W16, v128.shuffle<i32>(xb0, xb0, 3, 3, 3, 3), hiNibM(v, m4), cB);
      v = v128.load(qb + 64);
      cA = kdot(W16, v128.shuffle<i32>(xa1, xa1, 0, 0, 0, 0), v128.and(v, m4), cA);
      cB = kdot(W16, v128.shuffle<i32>(xb1, xb1, 0, 0, 0, 0), hiNibM(v, m4), cB);
      v = v128.load(qb + 80);
      cA = kdot(W16, v128.shuffle<i32>(xa1, xa1, 1, 1, 1, 1), v128.and(v, m4), cA);
      cB = kdot(W16, v128.shuffle<i32>(xb1, xb1, 1, 1, 1, 1), hiNibM(v, m4), cB);
      v = v128.load(qb + 96);
      cA = kdot(W16, v128.shuffle<i32>(xa1, xa1, 2, 2, 2, 2), v128.and(v, m4), cA);
      cB = kdot(W16, v128.shuffle<i32>(xb1, xb1, 2, 2, 2, 2), hiNibM(v, m4), cB);
      v = v128.load(qb + 112);
      cA = kdot(W16, v128.shuffle<i32>(xa1, xa1, 3, 3, 3, 3), v128.and(v, m4), cA);
      cB = kdot(W16, v128.shuffle<i32>(xb1, xb1, 3, 3, 3, 3), hiNibM(v, m4), cB);
      tot = kmadd(W16, kmadd(W16, tot, cA, kpair(W16, v128.load(scr + (p << 5)))), cB, kpair(W16, v128.load(scr + (p << 5) + 16)));
    }
    const summ = kgMins(scr, bs16 + (<usize> i << 4));
    const y = f32x4.splat(load<f32>(ad + (<usize> i << 2)));
    sumf = q4kFloat(sumf, v128.load(scr + 192), v128.load(scr + 208), y, tot, summ);
  }
  return sumf;
}

// q4kgRow for two activation rows (Q8_K quants at a and a + as, scales at ad and ad + ds, sums at
// bs16 and bs16 + bss): the group's header decoded and its nibbles unpacked once for both; their
// 4 weight rows stored at out rows t and t + 1 (a batch's last 2 rows, two sessions decoding).
@inline function q4kgRow2(
  W16: bool,
  gw: usize, nb: i32, a: usize, as: usize, ad: usize, ds: usize, bs16: usize, bss: usize, scr: usize,
  out: usize, outStride: i32, t: i32, r: i32,
): void {
  const m4 = mask4();
  let sumf = f32x4.splat(0), sumg = f32x4.splat(0);
  for (let i = 0; i < nb; i++) {
    const blk = gw + <usize> i * Q4KG;
    const qa = a + (<usize> i << 8);
    const qc = qa + as;
    q4kgHeader(blk, scr);
    let tot = i32x4.splat(0), tou = i32x4.splat(0);
    for (let p: usize = 0; p < 4; p++) {
      const qb = blk + 64 + (p << 7);
      let cA = i32x4.splat(0), cB = i32x4.splat(0), dA = i32x4.splat(0), dB = i32x4.splat(0);
      for (let h: usize = 0; h < 2; h++) {
        // quads 4h..4h+3 of the two sub-blocks: one 16-byte load of each row's activation
        const xa = v128.load(qa + (p << 6) + (h << 4));
        const xb = v128.load(qa + (p << 6) + 32 + (h << 4));
        const ya = v128.load(qc + (p << 6) + (h << 4));
        const yb = v128.load(qc + (p << 6) + 32 + (h << 4));
        const qh = qb + (h << 6);
        let v = v128.load(qh);
        let lo = v128.and(v, m4), hi = hiNibM(v, m4);
        cA = kdot(W16, v128.shuffle<i32>(xa, xa, 0, 0, 0, 0), lo, cA);
        cB = kdot(W16, v128.shuffle<i32>(xb, xb, 0, 0, 0, 0), hi, cB);
        dA = kdot(W16, v128.shuffle<i32>(ya, ya, 0, 0, 0, 0), lo, dA);
        dB = kdot(W16, v128.shuffle<i32>(yb, yb, 0, 0, 0, 0), hi, dB);
        v = v128.load(qh + 16);
        lo = v128.and(v, m4), hi = hiNibM(v, m4);
        cA = kdot(W16, v128.shuffle<i32>(xa, xa, 1, 1, 1, 1), lo, cA);
        cB = kdot(W16, v128.shuffle<i32>(xb, xb, 1, 1, 1, 1), hi, cB);
        dA = kdot(W16, v128.shuffle<i32>(ya, ya, 1, 1, 1, 1), lo, dA);
        dB = kdot(W16, v128.shuffle<i32>(yb, yb, 1, 1, 1, 1), hi, dB);
        v = v128.load(qh + 32);
        lo = v128.and(v, m4), hi = hiNibM(v, m4);
        cA = kdot(W16, v128.shuffle<i32>(xa, xa, 2, 2, 2, 2), lo, cA);
        cB = kdot(W16, v128.shuffle<i32>(xb, xb, 2, 2, 2, 2), hi, cB);
        dA = kdot(W16, v128.shuffle<i32>(ya, ya, 2, 2, 2, 2), lo, dA);
        dB = kdot(W16, v128.shuffle<i32>(yb, yb, 2, 2, 2, 2), hi, dB);
        v = v128.load(qh + 48);
        lo = v128.and(v, m4), hi = hiNibM(v, m4);
        cA = kdot(W16, v128.shuffle<i32>(xa, xa, 3, 3, 3, 3), lo, cA);
        cB = kdot(W16, v128.shuffle<i32>(xb, xb, 3, 3, 3, 3), hi, cB);
        dA = kdot(W16, v128.shuffle<i32>(ya, ya, 3, 3, 3, 3), lo, dA);
        dB = kdot(W16, v128.shuffle<i32>(yb, yb, 3, 3, 3, 3), hi, dB);
      }
      const sA = kpair(W16, v128.load(scr + (p << 5)));
      const sB = kpair(W16, v128.load(scr + (p << 5) + 16));
      tot = kmadd(W16, kmadd(W16, tot, cA, sA), cB, sB);
      tou = kmadd(W16, kmadd(W16, tou, dA, sA), dB, sB);
    }
    const summ = kgMins(scr, bs16 + (<usize> i << 4));
    const sumn = kgMins(scr, bs16 + bss + (<usize> i << 4));
    const dv = v128.load(scr + 192), mv = v128.load(scr + 208);
    sumf = q4kFloat(sumf, dv, mv, f32x4.splat(load<f32>(ad + (<usize> i << 2))), tot, summ);
    sumg = q4kFloat(sumg, dv, mv, f32x4.splat(load<f32>(ad + ds + (<usize> i << 2))), tou, sumn);
  }
  storeRows4(out, outStride, t, r, sumf);
  storeRows4(out, outStride, t + 1, r, sumg);
}

// One Q4_K row as the file has it (rows after the full groups) · one activation row, in the same
// order; rare, so plain.
function q4kRawRow(wr: usize, nb: i32, a: usize, ad: usize, bs16: usize): f32 {
  const m4 = mask4();
  let sumf: f32 = 0;
  for (let i = 0; i < nb; i++) {
    const x = wr + <usize> i * 144;
    const qa = a + (<usize> i << 8);
    let tot = i32x4.splat(0);
    for (let p = 0; p < 4; p++) {
      const v0 = v128.load(x + 16 + (<usize> p << 5));
      const v1 = v128.load(x + 32 + (<usize> p << 5));
      const q = qa + (<usize> p << 6);
      let cA = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(q), v128.and(v0, m4), i32x4.splat(0));
      cA = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(q + 16), v128.and(v1, m4), cA);
      let cB = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(q + 32), hiNibM(v0, m4), i32x4.splat(0));
      cB = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(q + 48), hiNibM(v1, m4), cB);
      tot = madd32(tot, cA, i32x4.splat(kScaleMin(x + 4, 2 * p, false)));
      tot = madd32(tot, cB, i32x4.splat(kScaleMin(x + 4, 2 * p + 1, false)));
    }
    const sumi = hsumI32(tot);
    const summ = hsumI32(i32x4.dot_i16x8_s(v128.load(bs16 + (<usize> i << 4)), q4kScales(x, true)));
    const yd = load<f32>(ad + (<usize> i << 2));
    const d = f16At(x) * yd;
    const dm = f16At(x + 2) * yd;
    sumf += d * <f32> sumi - dm * <f32> summ;
  }
  return sumf;
}

/** The 8 sub-block scales (s) or mins of a Q4_K block as i16 lanes (get_scale_min_k4, utmp). */
@inline function q4kScales(x: usize, mins: bool): v128 {
  const u0 = load<u32>(x + 4);
  const u1 = load<u32>(x + 8);
  const u2 = load<u32>(x + 12);
  let lo: u32, hi: u32;
  if (mins) {
    lo = u1 & 0x3f3f3f3f;
    hi = ((u2 >> 4) & 0x0f0f0f0f) | (((u1 >> 6) & 0x03030303) << 4);
  } else {
    lo = u0 & 0x3f3f3f3f;
    hi = (u2 & 0x0f0f0f0f) | (((u0 >> 6) & 0x03030303) << 4);
  }
  return i16x8.extend_low_i8x16_u(i64x2.splat(<i64> ((<u64> hi << 32) | <u64> lo)));
}

// ----------------------------------------------------------------------------- Q2_K, quad groups

// Q2_K keeps ggml's generic order, which is per super-block already (vecDotQ2_KQ8_K: the exact
// integers isum = Σ_g sc_g·Σ q·a over its 16 sub-blocks of 16 and summs = Σ_g m_g·bsum_g, then
// sumf += (d·yd)·isum − (dmin·yd)·summs), so any integer order gives its bits: lanes are weight
// rows, each byte quad of 4 consecutive elements dotted with the activation's (as it is, broadcast)
// by the relaxed i16 dot (2-bit quants, the 7-bit operand; 4 such dots of a sub-block summed in
// i16, ≤ 4·2·3·128), then pmaddwd by the sub-block's scale.
//
// Weights (repackQ2K): full 4-row groups, per super-block 336 bytes: quants vector (n, k) at
// 128n + 16k (row r's byte 4r + m = qs[32n + 4k + m]: bits 2j..2j + 1 hold element
// 128n + 32j + 4k + m, of sub-block 8n + 2j + (k >> 2)); the scale bytes transposed at 256
// (byte 4g + r = scales[g] of row r: scale low nibble, min high); the rows' f16 d at 320 + 2r and
// dmin at 328 + 2r. Rows after the full groups stay as the file has them (q2kRawRow).
//
// Activation: the Q8_K quants as they are, and every row's 16-element sums as i16 (permuteQ6KAct).
const Q2KG: usize = 336;
// pshufb indices: for g & 3 = j, byte 4j + r of a transposed scale vector into both i16 halves of
// lane r (Q2K_IDX + 16j); for the pair (2p, 2p + 1), p & 1 = h, bytes 8h + r and 8h + 4 + r into
// lanes 2r, 2r + 1 (Q2K_IDX + 64 + 16h); 0xff: zero.
const Q2K_IDX: usize = memory.data<u8>([
  0, 255, 0, 255, 1, 255, 1, 255, 2, 255, 2, 255, 3, 255, 3, 255,
  4, 255, 4, 255, 5, 255, 5, 255, 6, 255, 6, 255, 7, 255, 7, 255,
  8, 255, 8, 255, 9, 255, 9, 255, 10, 255, 10, 255, 11, 255, 11, 255,
  12, 255, 12, 255, 13, 255, 13, 255, 14, 255, 14, 255, 15, 255, 15, 255,
  0, 255, 4, 255, 1, 255, 5, 255, 2, 255, 6, 255, 3, 255, 7, 255,
  8, 255, 12, 255, 9, 255, 13, 255, 10, 255, 14, 255, 11, 255, 15, 255,
], 16);

/** Lay out the full 4-row groups (nGroups from w) of a Q2_K matrix as quads (above), in place. */
export function repackQ2K(w: usize, rowBytes: i32, nGroups: i32, tmp: usize): void {
  const nb = rowBytes / 84;
  const gb = <usize> rowBytes << 2;
  for (let g = 0; g < nGroups; g++) {
    const gw = w + <usize> g * gb;
    memory.copy(tmp, gw, gb);
    for (let i = 0; i < nb; i++) {
      const dst = gw + <usize> i * Q2KG;
      for (let r = 0; r < 4; r++) {
        const src = tmp + <usize> r * rowBytes + <usize> i * 84;
        for (let q = 0; q < 16; q++) {
          // quad q = 8n + k: qs[32n + 4k ..]
          store<u32>(dst + (<usize> q << 4) + (<usize> r << 2), load<u32>(src + 16 + (<usize> q << 2)));
        }
        for (let s = 0; s < 16; s++) store<u8>(dst + 256 + (<usize> s << 2) + <usize> r, load<u8>(src + <usize> s));
        store<u16>(dst + 320 + (<usize> r << 1), load<u16>(src + 80));
        store<u16>(dst + 328 + (<usize> r << 1), load<u16>(src + 82));
      }
    }
  }
}

// A group's super-block header at blk, decoded for its 4 rows into scr: at 16g sub-block g's
// scale as an i16 pair [sc, sc] per row; at 256 + 16p the mins [m(2p), m(2p + 1)] per row; d and
// dmin as f32 at 384 and 400.
@inline function q2kgHeader(blk: usize, scr: usize): void {
  const m15 = i16x8.splat(15);
  for (let s: usize = 0; s < 4; s++) {
    const v = v128.load(blk + 256 + (s << 4));
    v128.store(scr + (s << 6), v128.and(i8x16.swizzle(v, v128.load(Q2K_IDX)), m15));
    v128.store(scr + (s << 6) + 16, v128.and(i8x16.swizzle(v, v128.load(Q2K_IDX + 16)), m15));
    v128.store(scr + (s << 6) + 32, v128.and(i8x16.swizzle(v, v128.load(Q2K_IDX + 32)), m15));
    v128.store(scr + (s << 6) + 48, v128.and(i8x16.swizzle(v, v128.load(Q2K_IDX + 48)), m15));
    v128.store(scr + 256 + (s << 5), i16x8.shr_u(i8x16.swizzle(v, v128.load(Q2K_IDX + 64)), 4));
    v128.store(scr + 272 + (s << 5), i16x8.shr_u(i8x16.swizzle(v, v128.load(Q2K_IDX + 80)), 4));
  }
  v128.store(scr + 384, halvesToF32C(i32x4.extend_low_i16x8_u(v128.load64_zero(blk + 320))));
  v128.store(scr + 400, halvesToF32C(i32x4.extend_low_i16x8_u(v128.load64_zero(blk + 328))));
}

// The dot of quad k of quants vector qv (shift 2j) with one activation row's quad at x, into the
// i16 sums acc.
@inline function q2kDot(x: usize, w: v128, acc: v128): v128 {
  return i16x8.add(acc, i16x8.relaxed_dot_i8x16_i7x16_s(v128.load32_splat(x), w));
}

// summs of the 4 weight rows (lanes; their min pairs at scr + 256) against one activation row's
// 16 sub-block sums (i16) at bs.
@inline function q2kMins(scr: usize, bs: usize): v128 {
  let s = i32x4.splat(0);
  for (let p: usize = 0; p < 8; p++) {
    s = i32x4.add(s, i32x4.dot_i16x8_s(v128.load(scr + 256 + (p << 4)), v128.load32_splat(bs + (p << 2))));
  }
  return s;
}

// N (1, 2 or 4) activation rows (Q8_K quants at a + k·as; scales at ad + k·ds; 16-element sums
// at bs16 + k·bss) against the 4 weight rows of the group at gw, lanes = weight rows: each quants
// vector unpacked once for the N rows; results at out rows t..t + N − 1. The 4 shifts written out
// (constant shifts). Scratch: the header (q2kgHeader).
@inline function q2kgRows(
  N: i32,
  gw: usize, nb: i32, a: usize, as: usize, ad: usize, ds: usize, bs16: usize, bss: usize, scr: usize,
  out: usize, outStride: i32, t: i32, r: i32,
): void {
  const m3 = i8x16.splat(3);
  let f0 = f32x4.splat(0), f1 = f32x4.splat(0), f2 = f32x4.splat(0), f3 = f32x4.splat(0);
  for (let i = 0; i < nb; i++) {
    const blk = gw + <usize> i * Q2KG;
    q2kgHeader(blk, scr);
    const qa = a + (<usize> i << 8);
    let t0 = i32x4.splat(0), t1 = i32x4.splat(0), t2 = i32x4.splat(0), t3 = i32x4.splat(0);
    for (let n: usize = 0; n < 2; n++) {
      const qv = blk + (n << 7);
      const xn = qa + (n << 7);
      {
        // shift 0: sub-blocks 8n + 0 (quads 0-3) and 8n + 1 (quads 4-7)
        let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
        let b0 = i32x4.splat(0), b1 = i32x4.splat(0), b2 = i32x4.splat(0), b3 = i32x4.splat(0);
        for (let k: usize = 0; k < 4; k++) {
          let v = v128.load(qv + (k << 4));
          let w = v128.and(v, m3);
          let x = xn + 0 + (k << 2);
          a0 = q2kDot(x, w, a0);
          if (N >= 2) a1 = q2kDot(x + as, w, a1);
          if (N == 4) {
            a2 = q2kDot(x + 2 * as, w, a2);
            a3 = q2kDot(x + 3 * as, w, a3);
          }
          v = v128.load(qv + 64 + (k << 4));
          w = v128.and(v, m3);
          x += 16;
          b0 = q2kDot(x, w, b0);
          if (N >= 2) b1 = q2kDot(x + as, w, b1);
          if (N == 4) {
            b2 = q2kDot(x + 2 * as, w, b2);
            b3 = q2kDot(x + 3 * as, w, b3);
          }
        }
        const sa = v128.load(scr + (n << 7) + 0);
        const sb = v128.load(scr + (n << 7) + 16);
        t0 = i32x4.add(t0, i32x4.add(i32x4.dot_i16x8_s(a0, sa), i32x4.dot_i16x8_s(b0, sb)));
        if (N >= 2) t1 = i32x4.add(t1, i32x4.add(i32x4.dot_i16x8_s(a1, sa), i32x4.dot_i16x8_s(b1, sb)));
        if (N == 4) {
          t2 = i32x4.add(t2, i32x4.add(i32x4.dot_i16x8_s(a2, sa), i32x4.dot_i16x8_s(b2, sb)));
          t3 = i32x4.add(t3, i32x4.add(i32x4.dot_i16x8_s(a3, sa), i32x4.dot_i16x8_s(b3, sb)));
        }
      }
      {
        // shift 1: sub-blocks 8n + 2 (quads 0-3) and 8n + 3 (quads 4-7)
        let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
        let b0 = i32x4.splat(0), b1 = i32x4.splat(0), b2 = i32x4.splat(0), b3 = i32x4.splat(0);
        for (let k: usize = 0; k < 4; k++) {
          let v = v128.load(qv + (k << 4));
          let w = v128.and(i16x8.shr_u(v, 2), m3);
          let x = xn + 32 + (k << 2);
          a0 = q2kDot(x, w, a0);
          if (N >= 2) a1 = q2kDot(x + as, w, a1);
          if (N == 4) {
            a2 = q2kDot(x + 2 * as, w, a2);
            a3 = q2kDot(x + 3 * as, w, a3);
          }
          v = v128.load(qv + 64 + (k << 4));
          w = v128.and(i16x8.shr_u(v, 2), m3);
          x += 16;
          b0 = q2kDot(x, w, b0);
          if (N >= 2) b1 = q2kDot(x + as, w, b1);
          if (N == 4) {
            b2 = q2kDot(x + 2 * as, w, b2);
            b3 = q2kDot(x + 3 * as, w, b3);
          }
        }
        const sa = v128.load(scr + (n << 7) + 32);
        const sb = v128.load(scr + (n << 7) + 48);
        t0 = i32x4.add(t0, i32x4.add(i32x4.dot_i16x8_s(a0, sa), i32x4.dot_i16x8_s(b0, sb)));
        if (N >= 2) t1 = i32x4.add(t1, i32x4.add(i32x4.dot_i16x8_s(a1, sa), i32x4.dot_i16x8_s(b1, sb)));
        if (N == 4) {
          t2 = i32x4.add(t2, i32x4.add(i32x4.dot_i16x8_s(a2, sa), i32x4.dot_i16x8_s(b2, sb)));
          t3 = i32x4.add(t3, i32x4.add(i32x4.dot_i16x8_s(a3, sa), i32x4.dot_i16x8_s(b3, sb)));
        }
      }
      {
        // shift 2: sub-blocks 8n + 4 (quads 0-3) and 8n + 5 (quads 4-7)
        let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
        let b0 = i32x4.splat(0), b1 = i32x4.splat(0), b2 = i32x4.splat(0), b3 = i32x4.splat(0);
        for (let k: usize = 0; k < 4; k++) {
          let v = v128.load(qv + (k << 4));
          let w = v128.and(i16x8.shr_u(v, 4), m3);
          let x = xn + 64 + (k << 2);
          a0 = q2kDot(x, w, a0);
          if (N >= 2) a1 = q2kDot(x + as, w, a1);
          if (N == 4) {
            a2 = q2kDot(x + 2 * as, w, a2);
            a3 = q2kDot(x + 3 * as, w, a3);
          }
          v = v128.load(qv + 64 + (k << 4));
          w = v128.and(i16x8.shr_u(v, 4), m3);
          x += 16;
          b0 = q2kDot(x, w, b0);
          if (N >= 2) b1 = q2kDot(x + as, w, b1);
          if (N == 4) {
            b2 = q2kDot(x + 2 * as, w, b2);
            b3 = q2kDot(x + 3 * as, w, b3);
          }
        }
        const sa = v128.load(scr + (n << 7) + 64);
        const sb = v128.load(scr + (n << 7) + 80);
        t0 = i32x4.add(t0, i32x4.add(i32x4.dot_i16x8_s(a0, sa), i32x4.dot_i16x8_s(b0, sb)));
        if (N >= 2) t1 = i32x4.add(t1, i32x4.add(i32x4.dot_i16x8_s(a1, sa), i32x4.dot_i16x8_s(b1, sb)));
        if (N == 4) {
          t2 = i32x4.add(t2, i32x4.add(i32x4.dot_i16x8_s(a2, sa), i32x4.dot_i16x8_s(b2, sb)));
          t3 = i32x4.add(t3, i32x4.add(i32x4.dot_i16x8_s(a3, sa), i32x4.dot_i16x8_s(b3, sb)));
        }
      }
      {
        // shift 3: sub-blocks 8n + 6 (quads 0-3) and 8n + 7 (quads 4-7)
        let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
        let b0 = i32x4.splat(0), b1 = i32x4.splat(0), b2 = i32x4.splat(0), b3 = i32x4.splat(0);
        for (let k: usize = 0; k < 4; k++) {
          let v = v128.load(qv + (k << 4));
          let w = v128.and(i16x8.shr_u(v, 6), m3);
          let x = xn + 96 + (k << 2);
          a0 = q2kDot(x, w, a0);
          if (N >= 2) a1 = q2kDot(x + as, w, a1);
          if (N == 4) {
            a2 = q2kDot(x + 2 * as, w, a2);
            a3 = q2kDot(x + 3 * as, w, a3);
          }
          v = v128.load(qv + 64 + (k << 4));
          w = v128.and(i16x8.shr_u(v, 6), m3);
          x += 16;
          b0 = q2kDot(x, w, b0);
          if (N >= 2) b1 = q2kDot(x + as, w, b1);
          if (N == 4) {
            b2 = q2kDot(x + 2 * as, w, b2);
            b3 = q2kDot(x + 3 * as, w, b3);
          }
        }
        const sa = v128.load(scr + (n << 7) + 96);
        const sb = v128.load(scr + (n << 7) + 112);
        t0 = i32x4.add(t0, i32x4.add(i32x4.dot_i16x8_s(a0, sa), i32x4.dot_i16x8_s(b0, sb)));
        if (N >= 2) t1 = i32x4.add(t1, i32x4.add(i32x4.dot_i16x8_s(a1, sa), i32x4.dot_i16x8_s(b1, sb)));
        if (N == 4) {
          t2 = i32x4.add(t2, i32x4.add(i32x4.dot_i16x8_s(a2, sa), i32x4.dot_i16x8_s(b2, sb)));
          t3 = i32x4.add(t3, i32x4.add(i32x4.dot_i16x8_s(a3, sa), i32x4.dot_i16x8_s(b3, sb)));
        }
      }
    }
    const dv = v128.load(scr + 384);
    const mv = v128.load(scr + 400);
    const adi = ad + (<usize> i << 2);
    const bsi = bs16 + (<usize> i << 5);
    f0 = q4kFloat(f0, dv, mv, f32x4.splat(load<f32>(adi)), t0, q2kMins(scr, bsi));
    if (N >= 2) f1 = q4kFloat(f1, dv, mv, f32x4.splat(load<f32>(adi + ds)), t1, q2kMins(scr, bsi + bss));
    if (N == 4) {
      f2 = q4kFloat(f2, dv, mv, f32x4.splat(load<f32>(adi + 2 * ds)), t2, q2kMins(scr, bsi + 2 * bss));
      f3 = q4kFloat(f3, dv, mv, f32x4.splat(load<f32>(adi + 3 * ds)), t3, q2kMins(scr, bsi + 3 * bss));
    }
  }
  storeRows4(out, outStride, t, r, f0);
  if (N >= 2) storeRows4(out, outStride, t + 1, r, f1);
  if (N == 4) {
    storeRows4(out, outStride, t + 2, r, f2);
    storeRows4(out, outStride, t + 3, r, f3);
  }
}

// One Q2_K row as the file has it (rows after the full groups) · one activation row (Q8_K quants
// at a, scales at ad, 16-element sums at bs16), in the same order; rare, so plain.
function q2kRawRow(wr: usize, nb: i32, a: usize, ad: usize, bs16: usize): f32 {
  let sumf: f32 = 0;
  for (let i = 0; i < nb; i++) {
    const x = wr + <usize> i * 84;
    const qa = a + (<usize> i << 8);
    let summs = 0;
    for (let g = 0; g < 16; g++) {
      summs += (<i32> load<u8>(x + <usize> g) >> 4) * <i32> load<i16>(bs16 + (<usize> (i * 16 + g) << 1));
    }
    let isum = 0;
    for (let e = 0; e < 256; e++) {
      const n = e >> 7, j = (e >> 5) & 3, l = e & 31;
      const q = (<i32> load<u8>(x + 16 + <usize> (32 * n + l)) >> (2 * j)) & 3;
      isum += (<i32> load<u8>(x + <usize> (e >> 4)) & 15) * q * <i32> load<i8>(qa + <usize> e);
    }
    const yd = load<f32>(ad + (<usize> i << 2));
    const dall = yd * f16At(x + 80);
    const dmin = yd * f16At(x + 82);
    sumf += dall * <f32> isum - dmin * <f32> summs;
  }
  return sumf;
}

// Q2_K rows [r0, r1) × T activation rows (see above; aq: the Q8_K quants, aq16: the 16-element
// sums): 4 activation rows at a time, the last 1-3 as 2 + 1; rows after the full groups in the
// file's layout.
function q2kMatmul(w: usize, rowBytes: i32, nb: i32, aq: usize, ad: usize, T: i32, out: usize, outStride: i32, r0: i32, r1: i32, scr: usize, aq16: usize): void {
  const full = r0 + ((r1 - r0) & ~3);
  const tiled = T & ~3;
  const as = <usize> nb << 8;
  const ds = <usize> nb << 2;
  const bss = <usize> nb << 5;
  for (let r = r0; r < full; r += 4) {
    const gw = w + <usize> r * rowBytes;
    for (let t = 0; t < tiled; t += 4) {
      const o = <usize> (t * nb);
      q2kgRows(4, gw, nb, aq + (o << 8), as, ad + (o << 2), ds, aq16 + (o << 5), bss, scr, out, outStride, t, r);
    }
    let t = tiled;
    if (t + 2 <= T) {
      const o = <usize> (t * nb);
      q2kgRows(2, gw, nb, aq + (o << 8), as, ad + (o << 2), ds, aq16 + (o << 5), bss, scr, out, outStride, t, r);
      t += 2;
    }
    if (t < T) {
      const o = <usize> (t * nb);
      q2kgRows(1, gw, nb, aq + (o << 8), as, ad + (o << 2), ds, aq16 + (o << 5), bss, scr, out, outStride, t, r);
    }
  }
  for (let r = full; r < r1; r++) {
    for (let t = 0; t < T; t++) {
      const o = <usize> (t * nb);
      const v = q2kRawRow(w + <usize> r * rowBytes, nb, aq + (o << 8), ad + (o << 2), aq16 + (o << 5));
      store<f32>(out + (<usize> (t * outStride + r) << 2), v);
    }
  }
}

// ----------------------------------------------------------------------------- Q3_K, class quads

// Q3_K keeps ggml's generic order (vecDotQ3_KQ8_K: 8 class lanes, element mod 8; each
// lane_c += (d·yd)·Σ_g sc_g·Σ q·a over its elements, exact in i32; at the end lane_0 + … +
// lane_7), for the reason and in the manner of Q5_K: each class's 4 elements of a 32-element chunk
// k (c, c + 8 of sub-block 2k; c + 16, c + 24 of 2k + 1) are one byte quad. A quant is
// q = q2 − 4 + 4·hb (q2 the 2-bit value, hb its hmask bit): the dot's 7-bit operand is
// w = q2 | hb << 2 (0..7), the relaxed i16 dot (pmaddubsw) gives each row's two pairs
// (sub-blocks 2k and 2k + 1), the activation's 4·(pair sum) comes off them (i16x8.sub), and one
// pmaddwd by the two sub-blocks' scales sums them into the row's i32 lane — the same exact
// integers as the generic −4 per element.
//
// Weights (repackQ3K): full 4-row groups, per super-block 440 bytes: hmask vector c at 16c (row
// r's byte 4r + m = hmask[c + 8m]; bit k for chunk k), quants vector (h, c) at 128 + 128h + 16c
// (row r's byte 4r + m = qs[32h + c + 8m]; bits 2j..2j + 1 for chunk 4h + j), then the scales'
// words of the 4 rows (lanes): scales[0..3] at 384, [4..7] at 400, [8..11] at 416, then the rows'
// f16 d at 432. Rows after the full groups stay as the file has them (q3kRawRow).
//
// Activation (permuteQ3KAct): every row's Q8_K quants class-major per super-block (as Q5_K's:
// byte 32c + 4k + m = q[32k + c + 8m]), then as many bytes of corrections: for quad (c, k) the
// i16 pair 4·(a_c + a_c+8), 4·(a_c+16 + a_c+24) of its chunk.
const Q3KG: usize = 440;

/** Lay out the full 4-row groups (nGroups from w) of a Q3_K matrix as class quads, in place. */
export function repackQ3K(w: usize, rowBytes: i32, nGroups: i32, tmp: usize): void {
  const nb = rowBytes / 110;
  const gb = <usize> rowBytes << 2;
  for (let g = 0; g < nGroups; g++) {
    const gw = w + <usize> g * gb;
    memory.copy(tmp, gw, gb);
    for (let i = 0; i < nb; i++) {
      const dst = gw + <usize> i * Q3KG;
      for (let r = 0; r < 4; r++) {
        const src = tmp + <usize> r * rowBytes + <usize> i * 110;
        for (let c = 0; c < 8; c++) {
          for (let m = 0; m < 4; m++) {
            const at = (<usize> c << 4) + (<usize> r << 2) + <usize> m;
            const l = <usize> (c + 8 * m);
            store<u8>(dst + at, load<u8>(src + l));
            store<u8>(dst + 128 + at, load<u8>(src + 32 + l));
            store<u8>(dst + 256 + at, load<u8>(src + 64 + l));
          }
        }
        store<u32>(dst + 384 + (<usize> r << 2), load<u32>(src + 96));
        store<u32>(dst + 400 + (<usize> r << 2), load<u32>(src + 100));
        store<u32>(dst + 416 + (<usize> r << 2), load<u32>(src + 104));
        store<u16>(dst + 432 + (<usize> r << 1), load<u16>(src + 108));
      }
    }
  }
}

/**
 * The Q3_K kernel's activation from T Q8_K rows (qs of quantizeQ8K) into out: the quants
 * class-major, then the corrections (above).
 */
export function permuteQ3KAct(qs: usize, out: usize, n: i32, T: i32): void {
  const blocks = (n >> 8) * T;
  classMajor(qs, out, blocks);
  const corr = out + (<usize> blocks << 8);
  for (let b: usize = 0; b < (<usize> blocks << 8); b += 16) {
    v128.store(corr + b, i16x8.shl(i16x8.extadd_pairwise_i8x16_s(v128.load(out + b)), 2));
  }
}

// The 4 rows' sub-block scale pairs of each chunk k (8 i16: row r's sc_2k − 32, sc_2k+1 − 32 at
// lanes 2r, 2r + 1) from the group header at hdr, into scr + 16k; and the rows' d (f32) at
// scr + 128. q3Scales (kernels/quant/kquants.ts), 4 rows at a time.
@inline function q3kgHeader(hdr: usize, scr: usize): void {
  const a0 = v128.load(hdr);
  const a1 = v128.load(hdr + 16);
  const tmp = v128.load(hdr + 32);
  const m0f = i8x16.splat(0x0f);
  const m03 = i8x16.splat(0x03);
  const s0 = v128.or(v128.and(a0, m0f), i32x4.shl(v128.and(tmp, m03), 4));
  const s1 = v128.or(v128.and(a1, m0f), i32x4.shl(v128.and(i32x4.shr_u(tmp, 2), m03), 4));
  const s2 = v128.or(v128.and(i32x4.shr_u(a0, 4), m0f), i32x4.shl(v128.and(i32x4.shr_u(tmp, 4), m03), 4));
  const s3 = v128.or(v128.and(i32x4.shr_u(a1, 4), m0f), i32x4.shl(v128.and(i32x4.shr_u(tmp, 6), m03), 4));
  v128.store(scr, q3kPair(s0));
  v128.store(scr + 16, q3kPair(i32x4.shr_u(s0, 16)));
  v128.store(scr + 32, q3kPair(s1));
  v128.store(scr + 48, q3kPair(i32x4.shr_u(s1, 16)));
  v128.store(scr + 64, q3kPair(s2));
  v128.store(scr + 80, q3kPair(i32x4.shr_u(s2, 16)));
  v128.store(scr + 96, q3kPair(s3));
  v128.store(scr + 112, q3kPair(i32x4.shr_u(s3, 16)));
  v128.store(scr + 128, halvesToF32C(i32x4.extend_low_i16x8_u(v128.load64_zero(hdr + 48))));
}

// Bytes 0 and 1 of each i32 lane as its two i16 lanes, minus 32.
@inline function q3kPair(s: v128): v128 {
  const ff = i32x4.splat(0xff);
  const p = v128.or(v128.and(s, ff), i32x4.shl(v128.and(i32x4.shr_u(s, 8), ff), 16));
  return i16x8.sub(p, i16x8.splat(32));
}

// Chunk k's 7-bit operands w = q2 | hb << 2 of one class: its quants vector q (q2 at bits
// 2(k & 3)) and hmask vector h (hb at bit k). 16-bit shifts by at most 6 keep each byte's bits
// 0..2 within it.
@inline function q3kW(q: v128, h: v128, k: i32, m3: v128, m4: v128): v128 {
  const j = k & 3;
  const q2 = j == 0 ? v128.and(q, m3) : v128.and(i16x8.shr_u(q, 2 * j), m3);
  let hb: v128;
  if (k < 2) hb = v128.and(i16x8.shl(h, 2 - k), m4);
  else if (k == 2) hb = v128.and(h, m4);
  else hb = v128.and(i16x8.shr_u(h, k - 2), m4);
  return v128.or(q2, hb);
}

// One activation row's class quad (c, k) at ak (its correction at ak + cs) against the 4 rows'
// operands w: their two pairs, corrected, scaled by sc (chunk k's pairs), added to t.
@inline function q3kDot(ak: usize, cs: usize, w: v128, sc: v128, t: v128): v128 {
  const p = i16x8.sub(i16x8.relaxed_dot_i8x16_i7x16_s(v128.load32_splat(ak), w), v128.load32_splat(ak + cs));
  return i32x4.add(t, i32x4.dot_i16x8_s(p, sc));
}

// N (1, 2 or 4) activation rows (class-major quants at a + k·as; corrections cs bytes after each;
// scales at ad + k·ds) against the 4 weight rows of the group at gw, lanes = weight rows: each
// chunk's operands unpacked once for the N rows; results at out rows t..t + N − 1. Scratch: the
// header (q3kgHeader), the rows' d·yd (scr + 144), the float lanes (scr + 256: class c of row k at
// 64c + 16k).
@inline function q3kgRows(
  N: i32,
  gw: usize, nb: i32, a: usize, as: usize, cs: usize, ad: usize, ds: usize, scr: usize,
  out: usize, outStride: i32, t: i32, r: i32,
): void {
  const m3 = i8x16.splat(3);
  const m4 = i8x16.splat(4);
  const lanes = scr + 256;
  for (let c: usize = 0; c < 32; c++) v128.store(lanes + (c << 4), f32x4.splat(0));
  for (let i = 0; i < nb; i++) {
    const blk = gw + <usize> i * Q3KG;
    q3kgHeader(blk + 384, scr);
    const dv = v128.load(scr + 128);
    const adi = ad + (<usize> i << 2);
    for (let k = 0; k < N; k++) {
      v128.store(scr + 144 + (<usize> k << 4), f32x4.mul(dv, f32x4.splat(load<f32>(adi + <usize> k * ds))));
    }
    const a0 = a + (<usize> i << 8);
    for (let c: usize = 0; c < 8; c++) {
      const h = v128.load(blk + (c << 4));
      const q0 = v128.load(blk + 128 + (c << 4));
      const q1 = v128.load(blk + 256 + (c << 4));
      const ac = a0 + (c << 5);
      // the 8 chunks written out (constant shifts, no branches)
      let t0 = i32x4.splat(0), t1 = i32x4.splat(0), t2 = i32x4.splat(0), t3 = i32x4.splat(0);
      let w: v128, sc: v128, ak: usize;
      w = q3kW(q0, h, 0, m3, m4);
      sc = v128.load(scr + 0);
      ak = ac + 0;
      t0 = q3kDot(ak, cs, w, sc, t0);
      if (N >= 2) t1 = q3kDot(ak + as, cs, w, sc, t1);
      if (N == 4) {
        t2 = q3kDot(ak + 2 * as, cs, w, sc, t2);
        t3 = q3kDot(ak + 3 * as, cs, w, sc, t3);
      }
      w = q3kW(q0, h, 1, m3, m4);
      sc = v128.load(scr + 16);
      ak = ac + 4;
      t0 = q3kDot(ak, cs, w, sc, t0);
      if (N >= 2) t1 = q3kDot(ak + as, cs, w, sc, t1);
      if (N == 4) {
        t2 = q3kDot(ak + 2 * as, cs, w, sc, t2);
        t3 = q3kDot(ak + 3 * as, cs, w, sc, t3);
      }
      w = q3kW(q0, h, 2, m3, m4);
      sc = v128.load(scr + 32);
      ak = ac + 8;
      t0 = q3kDot(ak, cs, w, sc, t0);
      if (N >= 2) t1 = q3kDot(ak + as, cs, w, sc, t1);
      if (N == 4) {
        t2 = q3kDot(ak + 2 * as, cs, w, sc, t2);
        t3 = q3kDot(ak + 3 * as, cs, w, sc, t3);
      }
      w = q3kW(q0, h, 3, m3, m4);
      sc = v128.load(scr + 48);
      ak = ac + 12;
      t0 = q3kDot(ak, cs, w, sc, t0);
      if (N >= 2) t1 = q3kDot(ak + as, cs, w, sc, t1);
      if (N == 4) {
        t2 = q3kDot(ak + 2 * as, cs, w, sc, t2);
        t3 = q3kDot(ak + 3 * as, cs, w, sc, t3);
      }
      w = q3kW(q1, h, 4, m3, m4);
      sc = v128.load(scr + 64);
      ak = ac + 16;
      t0 = q3kDot(ak, cs, w, sc, t0);
      if (N >= 2) t1 = q3kDot(ak + as, cs, w, sc, t1);
      if (N == 4) {
        t2 = q3kDot(ak + 2 * as, cs, w, sc, t2);
        t3 = q3kDot(ak + 3 * as, cs, w, sc, t3);
      }
      w = q3kW(q1, h, 5, m3, m4);
      sc = v128.load(scr + 80);
      ak = ac + 20;
      t0 = q3kDot(ak, cs, w, sc, t0);
      if (N >= 2) t1 = q3kDot(ak + as, cs, w, sc, t1);
      if (N == 4) {
        t2 = q3kDot(ak + 2 * as, cs, w, sc, t2);
        t3 = q3kDot(ak + 3 * as, cs, w, sc, t3);
      }
      w = q3kW(q1, h, 6, m3, m4);
      sc = v128.load(scr + 96);
      ak = ac + 24;
      t0 = q3kDot(ak, cs, w, sc, t0);
      if (N >= 2) t1 = q3kDot(ak + as, cs, w, sc, t1);
      if (N == 4) {
        t2 = q3kDot(ak + 2 * as, cs, w, sc, t2);
        t3 = q3kDot(ak + 3 * as, cs, w, sc, t3);
      }
      w = q3kW(q1, h, 7, m3, m4);
      sc = v128.load(scr + 112);
      ak = ac + 28;
      t0 = q3kDot(ak, cs, w, sc, t0);
      if (N >= 2) t1 = q3kDot(ak + as, cs, w, sc, t1);
      if (N == 4) {
        t2 = q3kDot(ak + 2 * as, cs, w, sc, t2);
        t3 = q3kDot(ak + 3 * as, cs, w, sc, t3);
      }
      const l = lanes + (c << 6);
      v128.store(l, f32x4.add(v128.load(l), f32x4.mul(v128.load(scr + 144), f32x4.convert_i32x4_s(t0))));
      if (N >= 2) {
        v128.store(l + 16, f32x4.add(v128.load(l + 16), f32x4.mul(v128.load(scr + 160), f32x4.convert_i32x4_s(t1))));
      }
      if (N == 4) {
        v128.store(l + 32, f32x4.add(v128.load(l + 32), f32x4.mul(v128.load(scr + 176), f32x4.convert_i32x4_s(t2))));
        v128.store(l + 48, f32x4.add(v128.load(l + 48), f32x4.mul(v128.load(scr + 192), f32x4.convert_i32x4_s(t3))));
      }
    }
  }
  for (let k = 0; k < N; k++) {
    let f = f32x4.splat(0);
    for (let c: usize = 0; c < 8; c++) f = f32x4.add(f, v128.load(lanes + (c << 6) + (<usize> k << 4)));
    storeRows4(out, outStride, t + k, r, f);
  }
}

// Scale g (0..15) of the Q3_K block at x, minus 32 (q3Scales).
@inline function q3kScale(x: usize, g: i32): i32 {
  const lo = g < 8 ? <i32> load<u8>(x + 96 + <usize> g) & 15 : <i32> load<u8>(x + 88 + <usize> g) >> 4;
  const hi = (<i32> load<u8>(x + 104 + <usize> (g & 3)) >> (2 * (g >> 2))) & 3;
  return (lo | (hi << 4)) - 32;
}

// One Q3_K row as the file has it (rows after the full groups) · one activation row (class-major,
// its corrections cs bytes on), in the same order; rare, so plain. Scratch: 8 floats at lanes.
function q3kRawRow(wr: usize, nb: i32, a: usize, ad: usize, lanes: usize): f32 {
  for (let c: usize = 0; c < 8; c++) store<f32>(lanes + (c << 2), 0);
  for (let i = 0; i < nb; i++) {
    const x = wr + <usize> i * 110;
    const qa = a + (<usize> i << 8);
    const d = f16At(x + 108) * load<f32>(ad + (<usize> i << 2));
    for (let c = 0; c < 8; c++) {
      let s = 0;
      for (let k = 0; k < 8; k++) {
        for (let m = 0; m < 4; m++) {
          const l = c + 8 * m;
          const q2 = (<i32> load<u8>(x + 32 + <usize> (32 * (k >> 2) + l)) >> (2 * (k & 3))) & 3;
          const hb = (<i32> load<u8>(x + <usize> l) >> k) & 1;
          const g = 2 * k + (m >> 1);
          const sc = q3kScale(x, g);
          s += sc * (q2 + 4 * hb - 4) * <i32> load<i8>(qa + <usize> (32 * c + 4 * k + m));
        }
      }
      const l = lanes + (<usize> c << 2);
      store<f32>(l, load<f32>(l) + d * <f32> s);
    }
  }
  let sumf: f32 = 0;
  for (let c: usize = 0; c < 8; c++) sumf += load<f32>(lanes + (c << 2));
  return sumf;
}

// Q3_K rows [r0, r1) × T activation rows (see above; aq16: permuteQ3KAct's form): 4 activation
// rows at a time, the last 1-3 as 2 + 1; rows after the full groups in the file's layout.
function q3kMatmul(w: usize, rowBytes: i32, nb: i32, ad: usize, T: i32, out: usize, outStride: i32, r0: i32, r1: i32, scr: usize, aq16: usize): void {
  const full = r0 + ((r1 - r0) & ~3);
  const tiled = T & ~3;
  const cs = <usize> (T * nb) << 8;
  const as = <usize> nb << 8;
  const ds = <usize> nb << 2;
  for (let r = r0; r < full; r += 4) {
    const gw = w + <usize> r * rowBytes;
    for (let t = 0; t < tiled; t += 4) {
      const o = <usize> (t * nb);
      q3kgRows(4, gw, nb, aq16 + (o << 8), as, cs, ad + (o << 2), ds, scr, out, outStride, t, r);
    }
    let t = tiled;
    if (t + 2 <= T) {
      const o = <usize> (t * nb);
      q3kgRows(2, gw, nb, aq16 + (o << 8), as, cs, ad + (o << 2), ds, scr, out, outStride, t, r);
      t += 2;
    }
    if (t < T) {
      const o = <usize> (t * nb);
      q3kgRows(1, gw, nb, aq16 + (o << 8), as, cs, ad + (o << 2), ds, scr, out, outStride, t, r);
    }
  }
  for (let r = full; r < r1; r++) {
    for (let t = 0; t < T; t++) {
      const o = <usize> (t * nb);
      const v = q3kRawRow(w + <usize> r * rowBytes, nb, aq16 + (o << 8), ad + (o << 2), scr);
      store<f32>(out + (<usize> (t * outStride + r) << 2), v);
    }
  }
}

// ----------------------------------------------------------------------------- Q5_K, class quads

// Q5_K keeps ggml's generic order (kernels/quant/kquants_vecdot.ts, vecDotQ5K): per super-block 8
// class sums (class c: the elements c, c + 8, c + 16, c + 24 of every sub-block of 32), each
// Σ_j sc_j·Σ q·a exact in i32, then lane_c += (d·yd)·sum_c in f32; sumf −= (dmin·yd)·summ; at the
// end sumf + lane_0 + … + lane_7. Unlike Q4_K and Q6_K (which moved to an order of their own),
// Q5_K stays there: the kq-q5_k_m golden moves by up to 0.034 between llama.cpp's own CPU
// variants, and an order with one float step per super-block left it 0.0214 from llama.cpp's
// generic C, past the 0.02 tolerance. The order is kept by grouping each class's 4 elements of a
// sub-block into one byte quad: a relaxed dot of a weight quad with the activation's quad of the
// same class is then one class's partial sum, exact, and its lanes can be weight rows.
//
// Weights (repackQ5K): full 4-row groups, per super-block 704 bytes: the 4 rows' 16-byte headers
// (d, dmin, scales[12], as Q4_K's: q4kgHeader) at 16r; then qh: vector c (c = 0..7) at 64 + 16c,
// row r's byte 4r + m = qh[c + 8m]; then the nibbles: vector c of pair p (p = 0..3) at
// 192 + 128p + 16c, row r's byte 4r + m = qs[32p + c + 8m] (low nibble: sub-block 2p's element
// c + 8m, high: sub-block 2p + 1's; their 5th bits are bits 2p and 2p + 1 of the qh byte).
// Rows after the full groups stay as the file has them (q5kRawRow).
//
// Activation (permuteQ5KAct): every row's Q8_K quants class-major per super-block, byte
// 32c + 4j + m = q[32j + c + 8m], then every row's 32-element sums as i16 [T·nb × 8].
//
// Kernel: per class, 4 weight rows × 1, 2 or 4 activation rows (q5kgRows), the nibbles and their
// 5th bits unpacked once per pair for them.
const Q5KG: usize = 704;

/** Lay out the full 4-row groups (nGroups from w) of a Q5_K matrix as class quads, in place. */
export function repackQ5K(w: usize, rowBytes: i32, nGroups: i32, tmp: usize): void {
  const nb = rowBytes / 176;
  const gb = <usize> rowBytes << 2;
  for (let g = 0; g < nGroups; g++) {
    const gw = w + <usize> g * gb;
    memory.copy(tmp, gw, gb);
    for (let i = 0; i < nb; i++) {
      const dst = gw + <usize> i * Q5KG;
      for (let r = 0; r < 4; r++) {
        const src = tmp + <usize> r * rowBytes + <usize> i * 176;
        v128.store(dst + (<usize> r << 4), v128.load(src));
        for (let c = 0; c < 8; c++) {
          for (let m = 0; m < 4; m++) {
            const at = (<usize> c << 4) + (<usize> r << 2) + <usize> m;
            store<u8>(dst + 64 + at, load<u8>(src + 16 + <usize> (c + 8 * m)));
            for (let p = 0; p < 4; p++) {
              store<u8>(dst + 192 + (<usize> p << 7) + at, load<u8>(src + 48 + <usize> (32 * p + c + 8 * m)));
            }
          }
        }
      }
    }
  }
}

/**
 * The Q5_K kernel's activation from T Q8_K rows (qs, bsums of quantizeQ8K) into out: the quants
 * class-major (above), then the rows' 32-element sums as i16.
 */
export function permuteQ5KAct(qs: usize, bsums: usize, out: usize, n: i32, T: i32): void {
  const blocks = (n >> 8) * T;
  classMajor(qs, out, blocks);
  subBlockSums16(bsums, out + (<usize> blocks << 8), blocks << 3);
}

// `blocks` Q8_K super-blocks of quants at qs, class-major into out: byte 32c + 4j + m of a block
// = its byte 32j + c + 8m (sub-block j's class c quad).
@inline function classMajor(qs: usize, out: usize, blocks: i32): void {
  for (let b = 0; b < blocks; b++) {
    const src = qs + (<usize> b << 8);
    const dst = out + (<usize> b << 8);
    for (let j = 0; j < 8; j++) {
      // sub-block j's 32 bytes: class c's 4 bytes (c, c + 8, c + 16, c + 24) to 32c + 4j
      const x0 = v128.load(src + (<usize> j << 5));
      const x1 = v128.load(src + (<usize> j << 5) + 16);
      const lo = v128.shuffle<u8>(x0, x1, 0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
      const hi = v128.shuffle<u8>(x0, x1, 4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31);
      const o = dst + (<usize> j << 2);
      store<i32>(o, i32x4.extract_lane(lo, 0));
      store<i32>(o + 32, i32x4.extract_lane(lo, 1));
      store<i32>(o + 64, i32x4.extract_lane(lo, 2));
      store<i32>(o + 96, i32x4.extract_lane(lo, 3));
      store<i32>(o + 128, i32x4.extract_lane(hi, 0));
      store<i32>(o + 160, i32x4.extract_lane(hi, 1));
      store<i32>(o + 192, i32x4.extract_lane(hi, 2));
      store<i32>(o + 224, i32x4.extract_lane(hi, 3));
    }
  }
}

// The 5th bits of a pair's low (sub-block 2p) and high (2p + 1) nibbles at bit 4 of each byte,
// from a qh vector: bits 2p and 2p + 1 moved there (16-bit shifts by at most 4 keep each byte's
// bit 4 within its byte).
@inline function q5kHigh(h: v128, p: i32, hi: bool, m10: v128): v128 {
  const b = 2 * p + (hi ? 1 : 0);
  if (b < 4) return v128.and(i16x8.shl(h, 4 - b), m10);
  if (b == 4) return v128.and(h, m10);
  return v128.and(i16x8.shr_u(h, b - 4), m10);
}

// Pair p of class c for one activation row of a tile (its class quads at ak): the dots of the
// pair's unpacked nibbles lo, hi with the row's quads of sub-blocks 2p and 2p + 1, scaled (sl, sh:
// their scales in kmadd's form), added to t.
@inline function q5kTileDot(W16: bool, ak: usize, p: usize, lo: v128, hi: v128, sl: v128, sh: v128, t: v128): v128 {
  t = kmadd(W16, t, kdot0(W16, v128.load32_splat(ak + (p << 3)), lo), sl);
  return kmadd(W16, t, kdot0(W16, v128.load32_splat(ak + (p << 3) + 4), hi), sh);
}

// N (1, 2 or 4) activation rows (class-major quants at a + k·as, k < N; scales at ad + k·ds;
// sub-block sums at bs16 + k·bss) against the 4 weight rows of the group at gw, lanes = weight
// rows, in ggml's generic order (above): the group's nibbles and 5th bits are unpacked once for
// the N rows; results stored at out rows t..t + N − 1. Scratch: the header (q4kgHeader), the rows'
// d·yd (scr + 256), the sub-block scales in kmadd's form (scr + 384), the float lanes (scr + 512:
// class c of row k at 64c + 16k).
@inline function q5kgRows(
  W16: bool, N: i32,
  gw: usize, nb: i32, a: usize, as: usize, ad: usize, ds: usize, bs16: usize, bss: usize, scr: usize,
  out: usize, outStride: i32, t: i32, r: i32,
): void {
  const m4 = mask4();
  const m10 = i8x16.splat(0x10);
  const lanes = scr + 512;
  for (let c: usize = 0; c < 32; c++) v128.store(lanes + (c << 4), f32x4.splat(0));
  let f0 = f32x4.splat(0), f1 = f32x4.splat(0), f2 = f32x4.splat(0), f3 = f32x4.splat(0);
  for (let i = 0; i < nb; i++) {
    const blk = gw + <usize> i * Q5KG;
    q4kgHeader(blk, scr);
    for (let j: usize = 0; j < 8; j++) v128.store(scr + 384 + (j << 4), kpair(W16, v128.load(scr + (j << 4))));
    const adi = ad + (<usize> i << 2);
    const dv = v128.load(scr + 192);
    for (let k = 0; k < N; k++) {
      v128.store(scr + 256 + (<usize> k << 4), f32x4.mul(dv, f32x4.splat(load<f32>(adi + <usize> k * ds))));
    }
    const a0 = a + (<usize> i << 8);
    for (let c: usize = 0; c < 8; c++) {
      const h = v128.load(blk + 64 + (c << 4));
      const ac = a0 + (c << 5);
      // the 4 pairs written out (constant shifts, no branches: a loop over them ran at 0.7×)
      let t0 = i32x4.splat(0), t1 = i32x4.splat(0), t2 = i32x4.splat(0), t3 = i32x4.splat(0);
      let v: v128, lo: v128, hi: v128, sl: v128, sh: v128;
      v = v128.load(blk + 192 + (c << 4));
      lo = v128.or(v128.and(v, m4), q5kHigh(h, 0, false, m10));
      hi = v128.or(hiNibM(v, m4), q5kHigh(h, 0, true, m10));
      sl = v128.load(scr + 384);
      sh = v128.load(scr + 400);
      t0 = q5kTileDot(W16, ac, 0, lo, hi, sl, sh, t0);
      if (N >= 2) t1 = q5kTileDot(W16, ac + as, 0, lo, hi, sl, sh, t1);
      if (N == 4) {
        t2 = q5kTileDot(W16, ac + 2 * as, 0, lo, hi, sl, sh, t2);
        t3 = q5kTileDot(W16, ac + 3 * as, 0, lo, hi, sl, sh, t3);
      }
      v = v128.load(blk + 320 + (c << 4));
      lo = v128.or(v128.and(v, m4), q5kHigh(h, 1, false, m10));
      hi = v128.or(hiNibM(v, m4), q5kHigh(h, 1, true, m10));
      sl = v128.load(scr + 416);
      sh = v128.load(scr + 432);
      t0 = q5kTileDot(W16, ac, 1, lo, hi, sl, sh, t0);
      if (N >= 2) t1 = q5kTileDot(W16, ac + as, 1, lo, hi, sl, sh, t1);
      if (N == 4) {
        t2 = q5kTileDot(W16, ac + 2 * as, 1, lo, hi, sl, sh, t2);
        t3 = q5kTileDot(W16, ac + 3 * as, 1, lo, hi, sl, sh, t3);
      }
      v = v128.load(blk + 448 + (c << 4));
      lo = v128.or(v128.and(v, m4), q5kHigh(h, 2, false, m10));
      hi = v128.or(hiNibM(v, m4), q5kHigh(h, 2, true, m10));
      sl = v128.load(scr + 448);
      sh = v128.load(scr + 464);
      t0 = q5kTileDot(W16, ac, 2, lo, hi, sl, sh, t0);
      if (N >= 2) t1 = q5kTileDot(W16, ac + as, 2, lo, hi, sl, sh, t1);
      if (N == 4) {
        t2 = q5kTileDot(W16, ac + 2 * as, 2, lo, hi, sl, sh, t2);
        t3 = q5kTileDot(W16, ac + 3 * as, 2, lo, hi, sl, sh, t3);
      }
      v = v128.load(blk + 576 + (c << 4));
      lo = v128.or(v128.and(v, m4), q5kHigh(h, 3, false, m10));
      hi = v128.or(hiNibM(v, m4), q5kHigh(h, 3, true, m10));
      sl = v128.load(scr + 480);
      sh = v128.load(scr + 496);
      t0 = q5kTileDot(W16, ac, 3, lo, hi, sl, sh, t0);
      if (N >= 2) t1 = q5kTileDot(W16, ac + as, 3, lo, hi, sl, sh, t1);
      if (N == 4) {
        t2 = q5kTileDot(W16, ac + 2 * as, 3, lo, hi, sl, sh, t2);
        t3 = q5kTileDot(W16, ac + 3 * as, 3, lo, hi, sl, sh, t3);
      }
      const l = lanes + (c << 6);
      v128.store(l, f32x4.add(v128.load(l), f32x4.mul(v128.load(scr + 256), f32x4.convert_i32x4_s(t0))));
      if (N >= 2) {
        v128.store(l + 16, f32x4.add(v128.load(l + 16), f32x4.mul(v128.load(scr + 272), f32x4.convert_i32x4_s(t1))));
      }
      if (N == 4) {
        v128.store(l + 32, f32x4.add(v128.load(l + 32), f32x4.mul(v128.load(scr + 288), f32x4.convert_i32x4_s(t2))));
        v128.store(l + 48, f32x4.add(v128.load(l + 48), f32x4.mul(v128.load(scr + 304), f32x4.convert_i32x4_s(t3))));
      }
    }
    const mv = v128.load(scr + 208);
    const bsi = bs16 + (<usize> i << 4);
    f0 = f32x4.sub(f0, f32x4.mul(f32x4.mul(mv, f32x4.splat(load<f32>(adi))), f32x4.convert_i32x4_s(kgMins(scr, bsi))));
    if (N >= 2) {
      f1 = f32x4.sub(f1, f32x4.mul(f32x4.mul(mv, f32x4.splat(load<f32>(adi + ds))), f32x4.convert_i32x4_s(kgMins(scr, bsi + bss))));
    }
    if (N == 4) {
      f2 = f32x4.sub(f2, f32x4.mul(f32x4.mul(mv, f32x4.splat(load<f32>(adi + 2 * ds))), f32x4.convert_i32x4_s(kgMins(scr, bsi + 2 * bss))));
      f3 = f32x4.sub(f3, f32x4.mul(f32x4.mul(mv, f32x4.splat(load<f32>(adi + 3 * ds))), f32x4.convert_i32x4_s(kgMins(scr, bsi + 3 * bss))));
    }
  }
  for (let c: usize = 0; c < 8; c++) {
    const l = lanes + (c << 6);
    f0 = f32x4.add(f0, v128.load(l));
    if (N >= 2) f1 = f32x4.add(f1, v128.load(l + 16));
    if (N == 4) {
      f2 = f32x4.add(f2, v128.load(l + 32));
      f3 = f32x4.add(f3, v128.load(l + 48));
    }
  }
  storeRows4(out, outStride, t, r, f0);
  if (N >= 2) storeRows4(out, outStride, t + 1, r, f1);
  if (N == 4) {
    storeRows4(out, outStride, t + 2, r, f2);
    storeRows4(out, outStride, t + 3, r, f3);
  }
}

// One Q5_K row as the file has it (rows after the full groups) · one activation row in the
// class-major form, in the same order; rare, so plain. Scratch: 8 floats at lanes.
function q5kRawRow(wr: usize, nb: i32, a: usize, ad: usize, bs16: usize, lanes: usize): f32 {
  for (let c: usize = 0; c < 8; c++) store<f32>(lanes + (c << 2), 0);
  let sumf: f32 = 0;
  for (let i = 0; i < nb; i++) {
    const x = wr + <usize> i * 176;
    const qa = a + (<usize> i << 8);
    const yd = load<f32>(ad + (<usize> i << 2));
    const d = f16At(x) * yd;
    const dmin = f16At(x + 2) * yd;
    for (let c = 0; c < 8; c++) {
      let s = 0;
      for (let j = 0; j < 8; j++) {
        let sj = 0;
        for (let m = 0; m < 4; m++) {
          const e = c + 8 * m;
          const nib = (<i32> load<u8>(x + 48 + <usize> (32 * (j >> 1) + e)) >> (4 * (j & 1))) & 15;
          const q = nib | (((<i32> load<u8>(x + 16 + <usize> e) >> j) & 1) << 4);
          sj += q * <i32> load<i8>(qa + <usize> (32 * c + 4 * j + m));
        }
        s += kScaleMin(x + 4, j, false) * sj;
      }
      const l = lanes + (<usize> c << 2);
      store<f32>(l, load<f32>(l) + d * <f32> s);
    }
    let summ = 0;
    for (let j = 0; j < 8; j++) {
      summ += kScaleMin(x + 4, j, true) * <i32> load<i16>(bs16 + (<usize> (i * 8 + j) << 1));
    }
    sumf -= dmin * <f32> summ;
  }
  for (let c: usize = 0; c < 8; c++) sumf += load<f32>(lanes + (c << 2));
  return sumf;
}

// Q5_K rows [r0, r1) × T activation rows (see above; aq16: permuteQ5KAct's form): 4 activation
// rows at a time, the last 1-3 as 2 + 1; rows after the full groups in the file's layout
// (q5kRawRow).
function q5kMatmul(W16: bool, w: usize, rowBytes: i32, nb: i32, ad: usize, T: i32, out: usize, outStride: i32, r0: i32, r1: i32, scr: usize, aq16: usize): void {
  const full = r0 + ((r1 - r0) & ~3);
  const tiled = T & ~3;
  const bs16 = aq16 + (<usize> (T * nb) << 8);
  const as = <usize> nb << 8;
  const ds = <usize> nb << 2;
  const bss = <usize> nb << 4;
  for (let r = r0; r < full; r += 4) {
    const gw = w + <usize> r * rowBytes;
    for (let t = 0; t < tiled; t += 4) {
      const o = <usize> (t * nb);
      q5kgRows(W16, 4, gw, nb, aq16 + (o << 8), as, ad + (o << 2), ds, bs16 + (o << 4), bss, scr, out, outStride, t, r);
    }
    let t = tiled;
    if (t + 2 <= T) {
      const o = <usize> (t * nb);
      q5kgRows(W16, 2, gw, nb, aq16 + (o << 8), as, ad + (o << 2), ds, bs16 + (o << 4), bss, scr, out, outStride, t, r);
      t += 2;
    }
    if (t < T) {
      const o = <usize> (t * nb);
      q5kgRows(W16, 1, gw, nb, aq16 + (o << 8), as, ad + (o << 2), ds, bs16 + (o << 4), bss, scr, out, outStride, t, r);
    }
  }
  for (let r = full; r < r1; r++) {
    for (let t = 0; t < T; t++) {
      const o = <usize> (t * nb);
      const v = q5kRawRow(w + <usize> r * rowBytes, nb, aq16 + (o << 8), ad + (o << 2), bs16 + (o << 4), scr);
      store<f32>(out + (<usize> (t * outStride + r) << 2), v);
    }
  }
}

// ----------------------------------------------------------------------------- Q6_K, quad groups

// Q6_K sums in this engine's order (kernels/quant/kquants_vecdot.ts, vecDotQ6_KQ8_K): per
// super-block the exact integer sumi = Σ_g sc_g·(Σ q·a − 32·bsum_g) over its 16 groups of 16
// elements (q the unsigned 6-bit quant, bsum_g the Q8_K 16-element sum), then
// sumf += (d·yd)·sumi. ggml's generic order keeps 8 class lanes (element index mod 8), which
// dots whose lanes are rows cannot keep; in this order the quants (0..63) are the relaxed dot's
// 7-bit operand — exact however the engine reads it (signed, unsigned: vpdpbusd, or pmaddubsw,
// whose pair sums ≤ 2·63·127 do not saturate) — and −32·Σ sc·bsum comes once per super-block
// from the activation's sums (pmaddwd).
//
// Lanes are weight rows: one 16-byte load holds a byte quad (4 elements) of each of a group's 4
// rows, and every activation row's quad, broadcast, is dotted with it (Q4_0's single-row form),
// for 1 to 4 or 8 activation rows at once (q6kRows): the weights are unpacked once for all of
// them, the activation is read as quantizeQ8K left it, and the results come out as the output's
// rows. Each group of 16 takes 4 relaxed i16 dots (i16x8.relaxed_dot_i8x16_i7x16_s, pmaddubsw:
// pairs of products, two dots added ≤ 4·63·127 < 2^15) and 2 pmaddwd against the rows' scales,
// which sum and scale them into i32 in one step: on x86 without AVX-VNNI (V8 lowers the i32
// relaxed dot to pmaddubsw + pmaddwd + paddd there, as on the bench machine) that counts 10
// instructions a group where Q4_K's form (i32 relaxed dots, then i32x4.mul by the group's scale,
// which Q6_K would need per 16 elements rather than 32) counts 14; with vpdpbusd the count would
// favour Q4_K's form (not built). Why lanes = weight rows for the prompt tiles too, where Q4_K's
// 8-row tile broadcasts weights (lanes = activation rows): 8 sums + 4 unpacked quant vectors +
// the scales fit V8's 16 registers, and the activation needs no regrouping. 8-row tiles run at
// 37-40 GMAC/s on one thread (bench/tools/q6k_tile.ts; the class-lane kernel 13-17).
//
// Weights (repackQ6K): full 4-row groups; per super-block 768 bytes of quants: group g's 3
// vectors A, B, C at 48g, byte 4r + j of each holding, for row r, A: q(16g + j) | (q(16g + 12 + j)
// & 3) << 6, B: q(16g + 4 + j) | (q(16g + 12 + j) >> 2 & 3) << 6, C: q(16g + 8 + j) |
// (q(16g + 12 + j) >> 4) << 6, so that quads 0..2 are A, B, C & 0x3f and quad 3 is their top bits
// gathered (11 instructions for 4 vectors); and a 72-byte header: the scales, byte 8p + 2r + h =
// sc(2p + h) of row r, then the rows' f16 d at 64 + 2r. Super-blocks go in pairs, the two headers
// then the two quants (q6kQuants, q6kHeader): one stream, 16-byte aligned quants, each header
// read before its quants. Measured (bench/tools/q6k_tile.ts) against all headers after all quants
// (two streams): 1.1× and 2.7× for one row of 2048 × 5632 and of 32000 × 2048 (from DRAM),
// 1.0-1.2× for the prompt tiles; with the headers after a pair's quants, 0.82-0.97× on the prompt
// tiles. Rows after the full groups stay as the file has them (q6kRawRow).
//
// Activation: the Q8_K quants and scales as they are, and bs16 [T·nb × 16] i16: every row's
// 16-element sums (permuteQ6KAct).
const Q6KG: usize = 768;
const Q6KH: usize = 72;
// 16 × 0xc0: the top 2 bits of each byte of A, B, C
const Q6K_CONSTS: usize = memory.data<u8>([
  0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0,
], 16);

// Super-block i of the group at gw: its quants, and its header (nb super-blocks in all). Pairs of
// super-blocks [header 2k][header 2k + 1][quants 2k][quants 2k + 1] (1680 bytes, a multiple of
// 16), a last odd one [header][quants].
@inline function q6kQuants(gw: usize, nb: i32, i: i32): usize {
  const pair = gw + <usize> (i >> 1) * (2 * (Q6KG + Q6KH));
  return pair + (((i | 1) < nb) ? 2 * Q6KH : Q6KH) + (<usize> (i & 1)) * Q6KG;
}
@inline function q6kHeader(gw: usize, nb: i32, i: i32): usize {
  return gw + <usize> (i >> 1) * (2 * (Q6KG + Q6KH)) + (<usize> (i & 1)) * Q6KH;
}

// 6-bit quant e (0..255) of the Q6_K block at x (file layout).
@inline function q6kQuant(x: usize, e: i32): i32 {
  const h = e >> 7;
  const j = (e >> 5) & 3;
  const l = e & 31;
  const lo = (<i32> load<u8>(x + <usize> (64 * h + 32 * (j & 1) + l)) >> (4 * (j >> 1))) & 15;
  const hi = (<i32> load<u8>(x + <usize> (128 + 32 * h + l)) >> (2 * j)) & 3;
  return lo | (hi << 4);
}

/** Lay out the full 4-row groups (nGroups from w) of a Q6_K matrix as quads (above), in place. */
export function repackQ6K(w: usize, rowBytes: i32, nGroups: i32, tmp: usize): void {
  const nb = rowBytes / 210;
  const gb = <usize> rowBytes << 2;
  for (let g = 0; g < nGroups; g++) {
    const gw = w + <usize> g * gb;
    memory.copy(tmp, gw, gb);
    for (let i = 0; i < nb; i++) {
      const dst = q6kQuants(gw, nb, i);
      const hdr = q6kHeader(gw, nb, i);
      for (let r = 0; r < 4; r++) {
        const x = tmp + <usize> r * rowBytes + <usize> i * 210;
        for (let G = 0; G < 16; G++) {
          for (let j = 0; j < 4; j++) {
            const q3 = q6kQuant(x, 16 * G + 12 + j);
            const o = dst + <usize> (48 * G + 4 * r + j);
            store<u8>(o, q6kQuant(x, 16 * G + j) | ((q3 & 3) << 6));
            store<u8>(o + 16, q6kQuant(x, 16 * G + 4 + j) | (((q3 >> 2) & 3) << 6));
            store<u8>(o + 32, q6kQuant(x, 16 * G + 8 + j) | ((q3 >> 4) << 6));
          }
        }
        for (let p = 0; p < 8; p++) {
          store<u8>(hdr + <usize> (8 * p + 2 * r), load<u8>(x + 192 + <usize> (2 * p)));
          store<u8>(hdr + <usize> (8 * p + 2 * r + 1), load<u8>(x + 193 + <usize> (2 * p)));
        }
        store<u16>(hdr + 64 + <usize> (2 * r), load<u16>(x + 208));
      }
    }
  }
}

/** The Q6_K kernel's activation form: bs16, the T·nb·16 Q8_K group sums (i32) as i16. */
export function permuteQ6KAct(bsums: usize, bs16: usize, n: i32, T: i32): void {
  const groups = (n >> 4) * T;
  for (let s = 0; s < groups; s += 8) {
    const b = bsums + (<usize> s << 2);
    v128.store(bs16 + (<usize> s << 1), i16x8.narrow_i32x4_s(v128.load(b), v128.load(b + 16)));
  }
}

// A group's super-block header at hdr, decoded for its 4 rows (lanes) into scr: at 16g, group g's
// scale as an i16 pair [sc, sc] per row (the pmaddwd operand of the group's sums); at 256 + 16p,
// the scale pairs [sc(2p), sc(2p + 1)] per row (against the activation's sums); d as f32 at 384.
@inline function q6kgHeader(hdr: usize, scr: usize): void {
  for (let k: usize = 0; k < 4; k++) {
    const h = v128.load(hdr + (k << 4));
    const q0 = i16x8.extend_low_i8x16_s(h);
    const q1 = i16x8.extend_high_i8x16_s(h);
    v128.store(scr + 256 + (k << 5), q0);
    v128.store(scr + 272 + (k << 5), q1);
    v128.store(scr + (k << 6), i8x16.shuffle(q0, q0, 0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13));
    v128.store(scr + (k << 6) + 16, i8x16.shuffle(q0, q0, 2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15));
    v128.store(scr + (k << 6) + 32, i8x16.shuffle(q1, q1, 0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13));
    v128.store(scr + (k << 6) + 48, i8x16.shuffle(q1, q1, 2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15));
  }
  v128.store(scr + 384, halvesToF32C(i32x4.extend_low_i16x8_u(v128.load64_zero(hdr + 64))));
}

// One activation row's group (16 quants at e) against the group's 4 rows (quads v0..v3, scales
// sc): c + sc·Σ q·a, lanes = weight rows.
@inline function q6kStep(c: v128, e: usize, v0: v128, v1: v128, v2: v128, v3: v128, sc: v128): v128 {
  const x = v128.load(e);
  const p01 = i16x8.add(
    i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x, x, 0, 0, 0, 0), v0),
    i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x, x, 1, 1, 1, 1), v1),
  );
  const p23 = i16x8.add(
    i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x, x, 2, 2, 2, 2), v2),
    i16x8.relaxed_dot_i8x16_i7x16_s(v128.shuffle<i32>(x, x, 3, 3, 3, 3), v3),
  );
  return i32x4.add(c, i32x4.add(i32x4.dot_i16x8_s(p01, sc), i32x4.dot_i16x8_s(p23, sc)));
}

// sumf + (d·yd)·(c − 32·Σ sc·bsum): one activation row's super-block float step (its 16 group
// sums as i16 at bs, its scale at ad), lanes = weight rows; scr: the decoded header.
@inline function q6kFloat(sumf: v128, scr: usize, c: v128, bs: usize, ad: usize): v128 {
  const b0 = v128.load(bs);
  const b1 = v128.load(bs + 16);
  let m = i32x4.add(
    i32x4.add(
      i32x4.dot_i16x8_s(v128.load(scr + 256), v128.shuffle<i32>(b0, b0, 0, 0, 0, 0)),
      i32x4.dot_i16x8_s(v128.load(scr + 272), v128.shuffle<i32>(b0, b0, 1, 1, 1, 1)),
    ),
    i32x4.add(
      i32x4.dot_i16x8_s(v128.load(scr + 288), v128.shuffle<i32>(b0, b0, 2, 2, 2, 2)),
      i32x4.dot_i16x8_s(v128.load(scr + 304), v128.shuffle<i32>(b0, b0, 3, 3, 3, 3)),
    ),
  );
  m = i32x4.add(m, i32x4.add(
    i32x4.add(
      i32x4.dot_i16x8_s(v128.load(scr + 320), v128.shuffle<i32>(b1, b1, 0, 0, 0, 0)),
      i32x4.dot_i16x8_s(v128.load(scr + 336), v128.shuffle<i32>(b1, b1, 1, 1, 1, 1)),
    ),
    i32x4.add(
      i32x4.dot_i16x8_s(v128.load(scr + 352), v128.shuffle<i32>(b1, b1, 2, 2, 2, 2)),
      i32x4.dot_i16x8_s(v128.load(scr + 368), v128.shuffle<i32>(b1, b1, 3, 3, 3, 3)),
    ),
  ));
  const sumi = i32x4.sub(c, i32x4.shl(m, 5));
  const dy = f32x4.mul(v128.load(scr + 384), f32x4.splat(load<f32>(ad)));
  return f32x4.add(sumf, f32x4.mul(dy, f32x4.convert_i32x4_s(sumi)));
}

// NT (1 to 4, or 8: a constant at each call, so that the unused sums fold away) activation rows
// t..t+NT-1 (Q8_K quants at a, rows as bytes apart; scales at ad, ds apart; group sums at bs,
// bss apart) against the 4 weight rows of the group at gw; results to out rows t.., columns r..r+3.
@inline function q6kRows(
  NT: i32, gw: usize, nb: i32, a: usize, as: usize, ad: usize, ds: usize, bs: usize, bss: usize,
  scr: usize, out: usize, outStride: i32, t: i32, r: i32,
): void {
  const mc0 = v128.load(Q6K_CONSTS);
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0), s2 = f32x4.splat(0), s3 = f32x4.splat(0);
  let s4 = f32x4.splat(0), s5 = f32x4.splat(0), s6 = f32x4.splat(0), s7 = f32x4.splat(0);
  for (let i = 0; i < nb; i++) {
    const blk = q6kQuants(gw, nb, i);
    q6kgHeader(q6kHeader(gw, nb, i), scr);
    let c0 = i32x4.splat(0), c1 = i32x4.splat(0), c2 = i32x4.splat(0), c3 = i32x4.splat(0);
    let c4 = i32x4.splat(0), c5 = i32x4.splat(0), c6 = i32x4.splat(0), c7 = i32x4.splat(0);
    const qa = a + (<usize> i << 8);
    // a real loop over the 16 groups (see q80Tile8)
    for (let G: usize = 0; G < 16; G++) {
      const qb = blk + G * 48;
      const A = v128.load(qb);
      const B = v128.load(qb + 16);
      const C = v128.load(qb + 32);
      const Am = v128.and(A, mc0);
      const Bm = v128.and(B, mc0);
      const Cm = v128.and(C, mc0);
      const v0 = v128.xor(A, Am);
      const v1 = v128.xor(B, Bm);
      const v2 = v128.xor(C, Cm);
      const v3 = v128.or(v128.or(i16x8.shr_u(Am, 6), i16x8.shr_u(Bm, 4)), i16x8.shr_u(Cm, 2));
      const sc = v128.load(scr + (G << 4));
      const e = qa + (G << 4);
      c0 = q6kStep(c0, e, v0, v1, v2, v3, sc);
      if (NT > 1) c1 = q6kStep(c1, e + as, v0, v1, v2, v3, sc);
      if (NT > 2) c2 = q6kStep(c2, e + 2 * as, v0, v1, v2, v3, sc);
      if (NT > 3) c3 = q6kStep(c3, e + 3 * as, v0, v1, v2, v3, sc);
      if (NT > 4) {
        c4 = q6kStep(c4, e + 4 * as, v0, v1, v2, v3, sc);
        c5 = q6kStep(c5, e + 5 * as, v0, v1, v2, v3, sc);
        c6 = q6kStep(c6, e + 6 * as, v0, v1, v2, v3, sc);
        c7 = q6kStep(c7, e + 7 * as, v0, v1, v2, v3, sc);
      }
    }
    const b = bs + (<usize> i << 5);
    const y = ad + (<usize> i << 2);
    s0 = q6kFloat(s0, scr, c0, b, y);
    if (NT > 1) s1 = q6kFloat(s1, scr, c1, b + bss, y + ds);
    if (NT > 2) s2 = q6kFloat(s2, scr, c2, b + 2 * bss, y + 2 * ds);
    if (NT > 3) s3 = q6kFloat(s3, scr, c3, b + 3 * bss, y + 3 * ds);
    if (NT > 4) {
      s4 = q6kFloat(s4, scr, c4, b + 4 * bss, y + 4 * ds);
      s5 = q6kFloat(s5, scr, c5, b + 5 * bss, y + 5 * ds);
      s6 = q6kFloat(s6, scr, c6, b + 6 * bss, y + 6 * ds);
      s7 = q6kFloat(s7, scr, c7, b + 7 * bss, y + 7 * ds);
    }
  }
  storeRows4(out, outStride, t, r, s0);
  if (NT > 1) storeRows4(out, outStride, t + 1, r, s1);
  if (NT > 2) storeRows4(out, outStride, t + 2, r, s2);
  if (NT > 3) storeRows4(out, outStride, t + 3, r, s3);
  if (NT > 4) {
    storeRows4(out, outStride, t + 4, r, s4);
    storeRows4(out, outStride, t + 5, r, s5);
    storeRows4(out, outStride, t + 6, r, s6);
    storeRows4(out, outStride, t + 7, r, s7);
  }
}

// The 4 unpacked quarters (16 quants each) of a half block as the file has it (l0/l1:
// ql[0..32)/ql[32..64) bytes, qh: qh bytes of those positions): quarter q's 6-bit quants.
@inline function q6Quarter(l0: v128, l1: v128, qh: v128, q: i32, m4: v128, m30: v128): v128 {
  // the 2 high bits of each quant moved to bits 4-5 with 16-bit shifts (x64 has no byte shifts;
  // bits shifted across a byte border are masked off)
  if (q == 0) return v128.or(v128.and(l0, m4), v128.and(i16x8.shl(qh, 4), m30));
  if (q == 1) return v128.or(v128.and(l1, m4), v128.and(i16x8.shl(qh, 2), m30));
  if (q == 2) return v128.or(hiNibM(l0, m4), v128.and(qh, m30));
  return v128.or(hiNibM(l1, m4), v128.and(i16x8.shr_u(qh, 2), m30));
}

// One Q6_K row as the file has it (rows after the full groups) · one activation row (quants at
// a, scales at ad, group sums at bs), in the same order; rare, so plain.
function q6kRawRow(wr: usize, nb: i32, a: usize, ad: usize, bs: usize): f32 {
  const m4 = mask4();
  const m30 = mask30();
  let sumf: f32 = 0;
  for (let i = 0; i < nb; i++) {
    const x = wr + <usize> i * 210;
    const qa = a + (<usize> i << 8);
    let tot = i32x4.splat(0);
    for (let h = 0; h < 2; h++) {
      for (let l = 0; l < 2; l++) {
        const l0 = v128.load(x + <usize> (64 * h + 16 * l));
        const l1 = v128.load(x + <usize> (64 * h + 32 + 16 * l));
        const qh = v128.load(x + <usize> (128 + 32 * h + 16 * l));
        for (let q = 0; q < 4; q++) {
          // quarter q's 16 quants here are group 8h + 2q + l
          const g = 8 * h + 2 * q + l;
          const p = i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(qa + <usize> (16 * g)), q6Quarter(l0, l1, qh, q, m4, m30));
          tot = i32x4.add(tot, i32x4.dot_i16x8_s(p, i16x8.splat(<i16> load<i8>(x + 192 + <usize> g))));
        }
      }
    }
    let m = 0;
    for (let g = 0; g < 16; g++) {
      m += <i32> load<i8>(x + 192 + <usize> g) * <i32> load<i16>(bs + (<usize> i << 5) + (<usize> g << 1));
    }
    const sumi = hsumI32(tot) - (m << 5);
    const d = f16At(x + 208) * load<f32>(ad + (<usize> i << 2));
    sumf += d * <f32> sumi;
  }
  return sumf;
}

/** K-quant matmul: rows r0..r1 of w (kind = ggml type number) against T Q8_K activation rows. */
// mmK's Q4_K (quad groups): aq16 holds the tiles' activation groups, then bs16 (permuteQ4KAct).
@inline function q4kMatmul(
  W16: bool, w: usize, rowBytes: i32, nb: i32, aq: usize, ad: usize, T: i32, out: usize,
  outStride: i32, r0: i32, r1: i32, scr: usize, aq16: usize,
): void {
  // Q4_K (quad groups): aq16 holds the tiles' activation groups, then bs16 (permuteQ4KAct)
  const full = r0 + ((r1 - r0) & ~3);
  const tiled = q4kTiled(T);
  const grouped = q4kRows(T);
  const bs16 = aq16 + <usize> (grouped >> 2) * <usize> nb * Q8KG;
  // activation rows in blocks of 32, so that a block's groups (32·n bytes and their sums) stay
  // in L2 while every weight group of the chunk passes over them
  for (let tb = 0; tb < tiled; tb += 32) {
    const te = min<i32>(tiled, tb + 32);
    for (let r = r0; r < full; r += 4) {
      const gw = w + <usize> r * rowBytes;
      for (let t = tb; t < te; t += 8) {
        q4kTile8(W16, gw, nb, aq16 + <usize> (t >> 2) * <usize> nb * Q8KG, out, outStride, t, r, min<i32>(8, T - t), scr);
      }
    }
  }
  if (tiled < T) {
    // the rest (decode, a few sessions' rows, a batch's last 1-4): 3 or 4 in a 4-row tile
    // (q4kRows), 2 in the 2-row pass, 1 alone; each weight group passes once for them all
    const ag = aq16 + <usize> (tiled >> 2) * <usize> nb * Q8KG;
    for (let r = r0; r < full; r += 4) {
      const gw = w + <usize> r * rowBytes;
      if (grouped > tiled) q4kTile4(W16, gw, nb, ag, out, outStride, tiled, r, min<i32>(4, T - tiled), scr);
      let t = grouped;
      if (t + 2 == T) {
        const o = <usize> (t * nb);
        q4kgRow2(
          W16, gw, nb, aq + (o << 8), <usize> nb << 8, ad + (o << 2), <usize> nb << 2, bs16 + (o << 4),
          <usize> nb << 4, scr, out, outStride, t, r,
        );
        t = T;
      }
      for (; t < T; t++) {
        const v = q4kgRow(
          W16, gw,
          nb,
          aq + (<usize> (t * nb) << 8),
          ad + (<usize> (t * nb) << 2),
          bs16 + (<usize> (t * nb) << 4),
          scr,
        );
        storeRows4(out, outStride, t, r, v);
      }
    }
  }
  for (let r = full; r < r1; r++) {
    const wr = w + <usize> r * rowBytes;
    for (let t = 0; t < T; t++) {
      const v = q4kRawRow(
        wr,
        nb,
        aq + (<usize> (t * nb) << 8),
        ad + (<usize> (t * nb) << 2),
        bs16 + (<usize> (t * nb) << 4),
      );
      store<f32>(out + (<usize> (t * outStride + r) << 2), v);
    }
  }
}

// q4kMatmul in each dot form, as functions of their own: one body with W16 a constant in each
// (called as two inlined branches of one function, binaryen merged them back into one body that
// tests the form at every dot).
@noinline function q4kMatmul16(
  w: usize, rowBytes: i32, nb: i32, aq: usize, ad: usize, T: i32, out: usize, outStride: i32,
  r0: i32, r1: i32, scr: usize, aq16: usize,
): void {
  q4kMatmul(true, w, rowBytes, nb, aq, ad, T, out, outStride, r0, r1, scr, aq16);
}
@noinline function q4kMatmul32(
  w: usize, rowBytes: i32, nb: i32, aq: usize, ad: usize, T: i32, out: usize, outStride: i32,
  r0: i32, r1: i32, scr: usize, aq16: usize,
): void {
  q4kMatmul(false, w, rowBytes, nb, aq, ad, T, out, outStride, r0, r1, scr, aq16);
}

/**
 * A K-quant matmul, rows [r0, r1) of the weight at w × T Q8_K activation rows (quants aq, scales
 * ad), in the form the kind's kernel reads (aq16). `abs_`, the activation's sums, is read by none
 * since each K-quant has its own kernel: kept in the signature, so that the kernel
 * microbenchmarks (bench/tools) call earlier builds the same way.
 */
export function mmK(
  kind: i32,
  w: usize,
  rowBytes: i32,
  nb: i32,
  aq: usize,
  ad: usize,
  abs_: usize,
  T: i32,
  out: usize,
  outStride: i32,
  r0: i32,
  r1: i32,
  scr: usize,
  aq16: usize,
): void {
  if (kind == 12) {
    // Q4_K (quad groups), in the engine's dot form
    if (dotWidens()) q4kMatmul16(w, rowBytes, nb, aq, ad, T, out, outStride, r0, r1, scr, aq16);
    else q4kMatmul32(w, rowBytes, nb, aq, ad, T, out, outStride, r0, r1, scr, aq16);
    return;
  }
  if (kind == 10) {
    // Q2_K (quad groups)
    q2kMatmul(w, rowBytes, nb, aq, ad, T, out, outStride, r0, r1, scr, aq16);
    return;
  }
  if (kind == 11) {
    // Q3_K (class quads)
    q3kMatmul(w, rowBytes, nb, ad, T, out, outStride, r0, r1, scr, aq16);
    return;
  }
  if (kind == 13) {
    // Q5_K (class quads), in the engine's dot form
    if (dotWidens()) q5kMatmul(true, w, rowBytes, nb, ad, T, out, outStride, r0, r1, scr, aq16);
    else q5kMatmul(false, w, rowBytes, nb, ad, T, out, outStride, r0, r1, scr, aq16);
    return;
  }
  if (kind == 14) {
    // Q6_K (quad groups): aq16 holds bs16 (permuteQ6KAct); q6kRows over 8 activation rows at a
    // time, the last 1-7 in one pass of 1-4 rows or two (4 and 1-3): each pass decodes a group's
    // header and unpacks its quants once for its rows
    const full = r0 + ((r1 - r0) & ~3);
    const tiled = T & ~7;
    const as = <usize> nb << 8;
    const ds = <usize> nb << 2;
    const bss = <usize> nb << 5;
    // activation rows in blocks of 32 (see Q4_K)
    for (let tb = 0; tb < tiled; tb += 32) {
      const te = min<i32>(tiled, tb + 32);
      for (let r = r0; r < full; r += 4) {
        const gw = w + <usize> r * rowBytes;
        for (let t = tb; t < te; t += 8) {
          const o = <usize> (t * nb);
          q6kRows(8, gw, nb, aq + (o << 8), as, ad + (o << 2), ds, aq16 + (o << 5), bss, scr, out, outStride, t, r);
        }
      }
    }
    if (tiled < T) {
      for (let r = r0; r < full; r += 4) {
        const gw = w + <usize> r * rowBytes;
        let t = tiled;
        if (t + 4 <= T) {
          const o = <usize> (t * nb);
          q6kRows(4, gw, nb, aq + (o << 8), as, ad + (o << 2), ds, aq16 + (o << 5), bss, scr, out, outStride, t, r);
          t += 4;
        }
        const o = <usize> (t * nb);
        if (t + 3 == T) {
          q6kRows(3, gw, nb, aq + (o << 8), as, ad + (o << 2), ds, aq16 + (o << 5), bss, scr, out, outStride, t, r);
        } else if (t + 2 == T) {
          q6kRows(2, gw, nb, aq + (o << 8), as, ad + (o << 2), ds, aq16 + (o << 5), bss, scr, out, outStride, t, r);
        } else if (t + 1 == T) {
          q6kRows(1, gw, nb, aq + (o << 8), as, ad + (o << 2), ds, aq16 + (o << 5), bss, scr, out, outStride, t, r);
        }
      }
    }
    for (let r = full; r < r1; r++) {
      const wr = w + <usize> r * rowBytes;
      for (let t = 0; t < T; t++) {
        const o = <usize> (t * nb);
        store<f32>(out + (<usize> (t * outStride + r) << 2), q6kRawRow(wr, nb, aq + (o << 8), ad + (o << 2), aq16 + (o << 5)));
      }
    }
    return;
  }
  // matmul.ts calls mmK for the K-quants alone (kinds 10-14)
  unreachable();
}

// ----------------------------------------------------------------------------- float matmuls

@inline function f16x4(p: usize): v128 {
  return halvesToF32(i32x4.extend_low_i16x8_u(v128.load64_zero(p)));
}

@inline function bf16x4(p: usize): v128 {
  return i32x4.shl(i32x4.extend_low_i16x8_u(v128.load64_zero(p)), 16);
}

@inline function wElem(kind: i32, p: usize, i: i32): f32 {
  if (kind == 0) return load<f32>(p + (<usize> i << 2));
  if (kind == 1) return f16ToF32(<u32> load<u16>(p + (<usize> i << 1)));
  return reinterpret<f32>((<u32> load<u16>(p + (<usize> i << 1))) << 16);
}

@inline function wVec(kind: i32, p: usize, i: i32): v128 {
  if (kind == 0) return v128.load(p + (<usize> i << 2));
  if (kind == 1) return f16x4(p + (<usize> i << 1));
  return bf16x4(p + (<usize> i << 1));
}

// ggml_vec_dot_f32/f16/bf16 (scalar): each product (f32 for F32; exact for f16·f16 and bf16·bf16)
// summed in double, element by element, then rounded to float: bit-identical to ggml's plain C
// and the reference backend. Four weight rows at once give the four sums' add chains room.
@inline function prodF(kind: i32, wr: usize, i: i32, xv: f32): f64 {
  if (kind == 0) return <f64> (load<f32>(wr + (<usize> i << 2)) * xv);
  return <f64> wElem(kind, wr, i) * <f64> xv;
}

/**
 * F32/F16/BF16 weights (kind 0/1/30) · f32 activations (already rounded to f16/bf16 for those),
 * rows r0..r1 -> out[t*outStride + r]. scr is unused (kept for the job signature).
 */
export function mmF(
  kind: i32,
  w: usize,
  rowBytes: i32,
  n: i32,
  x: usize,
  T: i32,
  out: usize,
  outStride: i32,
  r0: i32,
  r1: i32,
  scr: usize,
): void {
  for (let r = r0; r < r1; r += 4) {
    const wr0 = w + <usize> r * rowBytes;
    const wr1 = w + <usize> min<i32>(r + 1, r1 - 1) * rowBytes;
    const wr2 = w + <usize> min<i32>(r + 2, r1 - 1) * rowBytes;
    const wr3 = w + <usize> min<i32>(r + 3, r1 - 1) * rowBytes;
    for (let t = 0; t < T; t++) {
      const xt = x + (<usize> (t * n) << 2);
      let s0: f64 = 0;
      let s1: f64 = 0;
      let s2: f64 = 0;
      let s3: f64 = 0;
      for (let i = 0; i < n; i++) {
        const xv = load<f32>(xt + (<usize> i << 2));
        s0 += prodF(kind, wr0, i, xv);
        s1 += prodF(kind, wr1, i, xv);
        s2 += prodF(kind, wr2, i, xv);
        s3 += prodF(kind, wr3, i, xv);
      }
      const ob = out + (<usize> (t * outStride + r) << 2);
      store<f32>(ob, <f32> s0);
      if (r + 1 < r1) store<f32>(ob + 4, <f32> s1);
      if (r + 2 < r1) store<f32>(ob + 8, <f32> s2);
      if (r + 3 < r1) store<f32>(ob + 12, <f32> s3);
    }
  }
}

// ----------------------------------------------------------------------------- elementwise ops

/** out[t,:] = x[t,:] * (1/sqrt(mean(x²)+eps)) * w, rows of n. */
export function rmsNorm(x: usize, w: usize, out: usize, rows: i32, n: i32, eps: f32): void {
  for (let t = 0; t < rows; t++) {
    const xt = x + (<usize> (t * n) << 2);
    const ot = out + (<usize> (t * n) << 2);
    let sum: f64 = 0;
    for (let i = 0; i < n; i++) {
      const v = load<f32>(xt + (<usize> i << 2));
      sum += <f64> (v * v);
    }
    const mean = <f32> (sum / <f64> n);
    const scale: f32 = <f32> 1 / sqrt<f32>(mean + eps);
    for (let i = 0; i < n; i++) {
      const p = <usize> i << 2;
      store<f32>(ot + p, (load<f32>(xt + p) * scale) * load<f32>(w + p));
    }
  }
}

/** x[t,:] += b over rows of n. */
export function addRows(x: usize, b: usize, rows: i32, n: i32): void {
  for (let t = 0; t < rows; t++) {
    const xt = x + (<usize> (t * n) << 2);
    for (let i = 0; i < n; i++) {
      const p = <usize> i << 2;
      store<f32>(xt + p, load<f32>(xt + p) + load<f32>(b + p));
    }
  }
}

/** a += b over n. */
export function add(a: usize, b: usize, n: i32): void {
  const n4 = n & ~3;
  let i = 0;
  for (; i < n4; i += 4) {
    const p = <usize> i << 2;
    v128.store(a + p, f32x4.add(v128.load(a + p), v128.load(b + p)));
  }
  for (; i < n; i++) {
    const p = <usize> i << 2;
    store<f32>(a + p, load<f32>(a + p) + load<f32>(b + p));
  }
}

/**
 * ggml_v_expf, x86 SSE2 (no FMA), on 4 lanes: the exp llama.cpp's x86 CPU build computes softmax
 * and SiLU with, step for step as the reference backend's expfGgml, so results are bit-identical.
 */
@inline function expGgml4(x: v128): v128 {
  const r = f32x4.splat(12582912); // 0x1.8p23
  // constants: the f32 values of ggml's hex literals (0x1.715476p+0, 0x1.62e4p-1, …)
  const z = f32x4.add(f32x4.mul(x, f32x4.splat(1.4426950216293335)), r);
  const n = f32x4.sub(z, r);
  const b = f32x4.sub(
    f32x4.sub(x, f32x4.mul(n, f32x4.splat(0.693145751953125))),
    f32x4.mul(n, f32x4.splat(1.428606765330187e-6)),
  );
  const e = i32x4.shl(z, 23);
  const k = i32x4.add(e, i32x4.splat(0x3f800000));
  const u = f32x4.mul(b, b);
  const t1 = f32x4.add(f32x4.mul(f32x4.splat(0.008247390389442444), b), f32x4.splat(0.04189976677298546));
  const t3 = f32x4.add(f32x4.mul(f32x4.splat(0.16668395698070526), b), f32x4.splat(0.4999912679195404));
  const j = f32x4.add(
    f32x4.mul(f32x4.add(f32x4.mul(t1, u), t3), u),
    f32x4.mul(f32x4.splat(0.9999994039535522), b),
  );
  const an = f32x4.abs(n);
  const big = f32x4.gt(an, f32x4.splat(126));
  const normal = f32x4.add(f32x4.mul(k, j), k);
  if (!v128.any_true(big)) return normal;
  const g = v128.and(f32x4.le(n, f32x4.splat(0)), i32x4.splat(0x82000000));
  const s1 = i32x4.add(g, i32x4.splat(0x7f000000));
  const s2 = i32x4.sub(e, g);
  const huge = f32x4.gt(an, f32x4.splat(192));
  const scaled = f32x4.mul(f32x4.add(f32x4.mul(s2, j), s2), s1);
  const out = v128.bitselect(f32x4.mul(s1, s1), scaled, huge);
  return v128.bitselect(out, normal, big);
}

/** out = silu(g) * u over n (ggml_vec_swiglu_f32's x86 path: x / (1 + v_expf(-x))). */
export function swiglu(g: usize, u: usize, out: usize, n: i32): void {
  let i = 0;
  const one = f32x4.splat(1);
  for (; i + 4 <= n; i += 4) {
    const p = <usize> i << 2;
    const x = v128.load(g + p);
    const s = f32x4.div(x, f32x4.add(one, expGgml4(f32x4.neg(x))));
    v128.store(out + p, f32x4.mul(s, v128.load(u + p)));
  }
  for (; i < n; i++) {
    // the tail through the same lanes (the reference uses v_expf for every element)
    const p = <usize> i << 2;
    const x = f32x4.splat(load<f32>(g + p));
    const s = f32x4.div(x, f32x4.add(one, expGgml4(f32x4.neg(x))));
    store<f32>(out + p, f32x4.extract_lane(s, 0) * load<f32>(u + p));
  }
}

/**
 * Rotate rows of x [rows × nHeads × headDim] in place; row t's (cos, sin) pairs are
 * cs[t · ropeDim ..] (the host's kernels/rope_angles.ts, glibc-exact like llama.cpp's).
 */
export function rope(
  x: usize,
  cs: usize,
  rows: i32,
  nHeads: i32,
  headDim: i32,
  ropeDim: i32,
  neox: bool,
): void {
  const half = ropeDim >> 1;
  for (let t = 0; t < rows; t++) {
    const cache = cs + (<usize> (t * ropeDim) << 2);
    for (let h = 0; h < nHeads; h++) {
      const xh = x + (<usize> ((t * nHeads + h) * headDim) << 2);
      for (let k = 0; k < half; k++) {
        const c = load<f32>(cache + (<usize> (2 * k) << 2));
        const s = load<f32>(cache + (<usize> (2 * k + 1) << 2));
        const i0: usize = neox ? <usize> k : <usize> (2 * k);
        const i1: usize = neox ? <usize> (k + half) : <usize> (2 * k + 1);
        const x0 = load<f32>(xh + (i0 << 2));
        const x1 = load<f32>(xh + (i1 << 2));
        store<f32>(xh + (i0 << 2), x0 * c - x1 * s);
        store<f32>(xh + (i1 << 2), x0 * s + x1 * c);
      }
    }
  }
}

/** Copy n floats to f16 (dst u16). */
export function toF16(src: usize, dst: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    store<u16>(dst + (<usize> i << 1), <u16> f32ToF16(load<f32>(src + (<usize> i << 2))));
  }
}

/**
 * Store `rows` rows of kvDim floats at src into a cache kept head by head: row t's head h (headDim
 * elements) to entry t of head h, dst + (h·nCtx + t)·headDim elements (dst: the first row's entry
 * of head 0), f32 or, with f16, rounded to f16 as toF16 does.
 */
export function storeHeads(src: usize, dst: usize, rows: i32, kvDim: i32, headDim: i32, nCtx: i32, f16: bool): void {
  const heads = kvDim / headDim;
  const esz: usize = f16 ? 2 : 4;
  for (let t = 0; t < rows; t++) {
    for (let h = 0; h < heads; h++) {
      const from = src + (<usize> (t * kvDim + h * headDim) << 2);
      const to = dst + <usize> ((h * nCtx + t) * headDim) * esz;
      if (f16) toF16(from, to, headDim);
      else memory.copy(to, from, <usize> headDim << 2);
    }
  }
}

// ----------------------------------------------------------------------------- attention

/** Σ_i fr(q_i·k0_i) and Σ_i fr(q_i·k1_i), each in double in element order, as f64x2. */
@inline function qkPair(qh: usize, k0: usize, k1: usize, headDim: i32): v128 {
  let acc = f64x2.splat(0);
  let i = 0;
  for (; i + 4 <= headDim; i += 4) {
    const o = <usize>i << 2;
    const qv = v128.load(qh + o);
    const p0 = f32x4.mul(qv, v128.load(k0 + o));
    const p1 = f32x4.mul(qv, v128.load(k1 + o));
    const u = v128.shuffle<f32>(p0, p1, 0, 4, 1, 5);
    const w = v128.shuffle<f32>(p0, p1, 2, 6, 3, 7);
    acc = f64x2.add(acc, f64x2.promote_low_f32x4(u));
    acc = f64x2.add(acc, f64x2.promote_low_f32x4(v128.shuffle<f32>(u, u, 2, 3, 2, 3)));
    acc = f64x2.add(acc, f64x2.promote_low_f32x4(w));
    acc = f64x2.add(acc, f64x2.promote_low_f32x4(v128.shuffle<f32>(w, w, 2, 3, 2, 3)));
  }
  for (; i < headDim; i++) {
    const o = <usize>i << 2;
    const q = load<f32>(qh + o);
    const pr = f64x2.replace_lane(f64x2.splat(<f64> (q * load<f32>(k0 + o))), 1, <f64> (q * load<f32>(k1 + o)));
    acc = f64x2.add(acc, pr);
  }
  return acc;
}

/** qkQuad's sums of keys 2 and 3 (a per-instance global: each thread has its own). */
let qk23: v128 = f64x2.splat(0);

// Products of q with 4 keys (k0 + c·ks, c < 4), lanes as in qkPair, each key's summed in double in
// element order: returns [key 0, key 1], keys 2 and 3 in qk23. Two independent addition chains
// (the latency of one bounded the scores).
@inline function qkQuad(qh: usize, k0: usize, ks: usize, headDim: i32): v128 {
  let a01 = f64x2.splat(0);
  let a23 = f64x2.splat(0);
  const k1 = k0 + ks;
  const k2 = k1 + ks;
  const k3 = k2 + ks;
  let i = 0;
  for (; i + 4 <= headDim; i += 4) {
    const o = <usize>i << 2;
    const qv = v128.load(qh + o);
    const p0 = f32x4.mul(qv, v128.load(k0 + o));
    const p1 = f32x4.mul(qv, v128.load(k1 + o));
    const p2 = f32x4.mul(qv, v128.load(k2 + o));
    const p3 = f32x4.mul(qv, v128.load(k3 + o));
    const u = v128.shuffle<f32>(p0, p1, 0, 4, 1, 5);
    const w = v128.shuffle<f32>(p0, p1, 2, 6, 3, 7);
    const u2 = v128.shuffle<f32>(p2, p3, 0, 4, 1, 5);
    const w2 = v128.shuffle<f32>(p2, p3, 2, 6, 3, 7);
    a01 = f64x2.add(a01, f64x2.promote_low_f32x4(u));
    a23 = f64x2.add(a23, f64x2.promote_low_f32x4(u2));
    a01 = f64x2.add(a01, f64x2.promote_low_f32x4(v128.shuffle<f32>(u, u, 2, 3, 2, 3)));
    a23 = f64x2.add(a23, f64x2.promote_low_f32x4(v128.shuffle<f32>(u2, u2, 2, 3, 2, 3)));
    a01 = f64x2.add(a01, f64x2.promote_low_f32x4(w));
    a23 = f64x2.add(a23, f64x2.promote_low_f32x4(w2));
    a01 = f64x2.add(a01, f64x2.promote_low_f32x4(v128.shuffle<f32>(w, w, 2, 3, 2, 3)));
    a23 = f64x2.add(a23, f64x2.promote_low_f32x4(v128.shuffle<f32>(w2, w2, 2, 3, 2, 3)));
  }
  for (; i < headDim; i++) {
    const o = <usize>i << 2;
    const q = load<f32>(qh + o);
    a01 = f64x2.add(a01, f64x2.replace_lane(f64x2.splat(<f64> (q * load<f32>(k0 + o))), 1, <f64> (q * load<f32>(k1 + o))));
    a23 = f64x2.add(a23, f64x2.replace_lane(f64x2.splat(<f64> (q * load<f32>(k2 + o))), 1, <f64> (q * load<f32>(k3 + o))));
  }
  qk23 = a23;
  return a01;
}

let qk45: v128 = f64x2.splat(0);
let qk67: v128 = f64x2.splat(0);

// qkQuad for 8 keys: four chains; returns keys 0, 1, the others in qk23, qk45, qk67.
@inline function qkOct(qh: usize, k0: usize, ks: usize, headDim: i32): v128 {
  let a01 = f64x2.splat(0);
  let a23 = f64x2.splat(0);
  let a45 = f64x2.splat(0);
  let a67 = f64x2.splat(0);
  let i = 0;
  for (; i + 4 <= headDim; i += 4) {
    const o = <usize>i << 2;
    const qv = v128.load(qh + o);
    const kb = k0 + o;
    const p0 = f32x4.mul(qv, v128.load(kb));
    const p1 = f32x4.mul(qv, v128.load(kb + ks));
    const p2 = f32x4.mul(qv, v128.load(kb + 2 * ks));
    const p3 = f32x4.mul(qv, v128.load(kb + 3 * ks));
    const u = v128.shuffle<f32>(p0, p1, 0, 4, 1, 5);
    const w = v128.shuffle<f32>(p0, p1, 2, 6, 3, 7);
    const u2 = v128.shuffle<f32>(p2, p3, 0, 4, 1, 5);
    const w2 = v128.shuffle<f32>(p2, p3, 2, 6, 3, 7);
    const p4 = f32x4.mul(qv, v128.load(kb + 4 * ks));
    const p5 = f32x4.mul(qv, v128.load(kb + 5 * ks));
    const p6 = f32x4.mul(qv, v128.load(kb + 6 * ks));
    const p7 = f32x4.mul(qv, v128.load(kb + 7 * ks));
    const u4 = v128.shuffle<f32>(p4, p5, 0, 4, 1, 5);
    const w4 = v128.shuffle<f32>(p4, p5, 2, 6, 3, 7);
    const u6 = v128.shuffle<f32>(p6, p7, 0, 4, 1, 5);
    const w6 = v128.shuffle<f32>(p6, p7, 2, 6, 3, 7);
    a01 = f64x2.add(a01, f64x2.promote_low_f32x4(u));
    a23 = f64x2.add(a23, f64x2.promote_low_f32x4(u2));
    a45 = f64x2.add(a45, f64x2.promote_low_f32x4(u4));
    a67 = f64x2.add(a67, f64x2.promote_low_f32x4(u6));
    a01 = f64x2.add(a01, f64x2.promote_low_f32x4(v128.shuffle<f32>(u, u, 2, 3, 2, 3)));
    a23 = f64x2.add(a23, f64x2.promote_low_f32x4(v128.shuffle<f32>(u2, u2, 2, 3, 2, 3)));
    a45 = f64x2.add(a45, f64x2.promote_low_f32x4(v128.shuffle<f32>(u4, u4, 2, 3, 2, 3)));
    a67 = f64x2.add(a67, f64x2.promote_low_f32x4(v128.shuffle<f32>(u6, u6, 2, 3, 2, 3)));
    a01 = f64x2.add(a01, f64x2.promote_low_f32x4(w));
    a23 = f64x2.add(a23, f64x2.promote_low_f32x4(w2));
    a45 = f64x2.add(a45, f64x2.promote_low_f32x4(w4));
    a67 = f64x2.add(a67, f64x2.promote_low_f32x4(w6));
    a01 = f64x2.add(a01, f64x2.promote_low_f32x4(v128.shuffle<f32>(w, w, 2, 3, 2, 3)));
    a23 = f64x2.add(a23, f64x2.promote_low_f32x4(v128.shuffle<f32>(w2, w2, 2, 3, 2, 3)));
    a45 = f64x2.add(a45, f64x2.promote_low_f32x4(v128.shuffle<f32>(w4, w4, 2, 3, 2, 3)));
    a67 = f64x2.add(a67, f64x2.promote_low_f32x4(v128.shuffle<f32>(w6, w6, 2, 3, 2, 3)));
  }
  for (; i < headDim; i++) {
    const o = <usize>i << 2;
    const q = load<f32>(qh + o);
    const kb = k0 + o;
    a01 = f64x2.add(a01, f64x2.replace_lane(f64x2.splat(<f64> (q * load<f32>(kb))), 1, <f64> (q * load<f32>(kb + ks))));
    a23 = f64x2.add(a23, f64x2.replace_lane(f64x2.splat(<f64> (q * load<f32>(kb + 2 * ks))), 1, <f64> (q * load<f32>(kb + 3 * ks))));
    a45 = f64x2.add(a45, f64x2.replace_lane(f64x2.splat(<f64> (q * load<f32>(kb + 4 * ks))), 1, <f64> (q * load<f32>(kb + 5 * ks))));
    a67 = f64x2.add(a67, f64x2.replace_lane(f64x2.splat(<f64> (q * load<f32>(kb + 6 * ks))), 1, <f64> (q * load<f32>(kb + 7 * ks))));
  }
  qk23 = a23;
  qk45 = a45;
  qk67 = a67;
  return a01;
}



/**
 * Causal attention. Work item i covers part i % HS of the query heads of KV head (i / HS) % nKV's
 * group (HS parts of group / HS heads: a decode of a model with few KV heads, down to one, still
 * has an item for every thread) and query rows [rb·RB, rb·RB + RB) with rb = i / HS / nKV: row t (at position pos0 + t)
 * attends over cache entries 0..pos0+t. kc/vc: this layer's K and V (f32 or f16): rows of every
 * head ([nCtx × kvDim], headStride = headDim) or head by head ([nKV][nCtx × headDim], headStride =
 * nCtx·headDim: each head's entries one stream; a decode at 4K positions read them 1.6× faster). An f16 cache is widened once per item into scratch, and q and the probabilities are
 * rounded to f16 first, as ggml does (its vec_dot type for f16 is f16). Every sum runs in the
 * reference backend's order (ggml's scalar code: products rounded to float, summed in double;
 * softmax through v_expf in groups of 4), so the output is bit-identical to it.
 * flags: bit 0 = f16 cache; the bits above = sliding window W (0: none), under which entries
 * before pos0 + t + 1 − W get probability exactly 0, as llama.cpp's mask gives them.
 * scr: per-thread scratch of (headDim + nCtx + 4 + 2·nCtx·headDim) floats.
 */
export function attention(
  q: usize,
  kc: usize,
  vc: usize,
  out: usize,
  pos0: i32,
  rows: i32,
  nHeads: i32,
  nKV: i32,
  headDim: i32,
  scale: f32,
  flags: i32,
  w0: i32,
  w1: i32,
  scr: usize,
  RB: i32,
  headStride: i32,
  HS: i32,
): void {
  const f16 = (flags & 1) != 0;
  const window = flags >>> 1;
  const kvDim = nKV * headDim;
  // elements between two positions of one head: a row of every head, or one head's (see WKV)
  const posStride = headStride == headDim ? kvDim : headDim;
  const group = nHeads / nKV;
  const qscr = scr;
  const scores = qscr + (<usize>headDim << 2);
  const nCtxMax = pos0 + rows;
  const kwide = scores + (<usize>(nCtxMax + 4) << 2); // scores padded to whole groups of 4
  const vwide = kwide + (<usize>(nCtxMax * headDim) << 2);
  // each item's query heads: HG of its KV head's group, part hp of HS
  const HG = group / HS;
  for (let item = w0; item < w1; item++) {
    const hp = item % HS;
    const kvh = (item / HS) % nKV;
    const t0 = (item / HS / nKV) * RB;
    const t1 = min<i32>(rows, t0 + RB);
    const nmax = pos0 + t1;
    let kp: usize;
    let vp: usize;
    let kstride: usize;
    if (f16) {
      for (let j = 0; j < nmax; j++) {
        const ks = kc + (<usize>(kvh * headStride + j * posStride) << 1);
        const vs = vc + (<usize>(kvh * headStride + j * posStride) << 1);
        const kd = kwide + (<usize>(j * headDim) << 2);
        const vd = vwide + (<usize>(j * headDim) << 2);
        let i = 0;
        for (; i + 4 <= headDim; i += 4) {
          v128.store(kd + (<usize>i << 2), f16x4(ks + (<usize>i << 1)));
          v128.store(vd + (<usize>i << 2), f16x4(vs + (<usize>i << 1)));
        }
        for (; i < headDim; i++) {
          store<f32>(kd + (<usize>i << 2), f16At(ks + (<usize>i << 1)));
          store<f32>(vd + (<usize>i << 2), f16At(vs + (<usize>i << 1)));
        }
      }
      kp = kwide;
      vp = vwide;
      kstride = <usize>headDim << 2;
    } else {
      kp = kc + (<usize>(kvh * headStride) << 2);
      vp = vc + (<usize>(kvh * headStride) << 2);
      kstride = <usize>posStride << 2;
    }
    for (let t = t0; t < t1; t++) {
      const nkv = pos0 + t + 1;
      for (let h = kvh * group + hp * HG; h < kvh * group + (hp + 1) * HG; h++) {
        let qh = q + (<usize>((t * nHeads + h) * headDim) << 2);
        const oh = out + (<usize>((t * nHeads + h) * headDim) << 2);
        if (f16) {
          for (let i = 0; i < headDim; i++) {
            const p = <usize>i << 2;
            store<f32>(qscr + p, f16ToF32(f32ToF16(load<f32>(qh + p))));
          }
          qh = qscr;
        }
        // scores as the reference computes them (ggml's scalar f32 dot): each product rounded to
        // float, summed in double in element order, then scaled in float; two keys per f64x2
        let mx: f32 = -Infinity;
        let j = 0;
        for (; j + 8 <= nkv; j += 8) {
          const k0 = kp + <usize>j * kstride;
          const d01 = qkOct(qh, k0, kstride, headDim);
          const d23 = qk23;
          const d45 = qk45;
          const d67 = qk67;
          const s0 = <f32> f64x2.extract_lane(d01, 0) * scale;
          const s1 = <f32> f64x2.extract_lane(d01, 1) * scale;
          const s2 = <f32> f64x2.extract_lane(d23, 0) * scale;
          const s3 = <f32> f64x2.extract_lane(d23, 1) * scale;
          const s4 = <f32> f64x2.extract_lane(d45, 0) * scale;
          const s5 = <f32> f64x2.extract_lane(d45, 1) * scale;
          const s6 = <f32> f64x2.extract_lane(d67, 0) * scale;
          const s7 = <f32> f64x2.extract_lane(d67, 1) * scale;
          v128.store(scores + (<usize>j << 2), f32x4(s0, s1, s2, s3));
          v128.store(scores + (<usize>j << 2) + 16, f32x4(s4, s5, s6, s7));
          mx = max<f32>(mx, max<f32>(max<f32>(s0, s1), max<f32>(s2, s3)));
          mx = max<f32>(mx, max<f32>(max<f32>(s4, s5), max<f32>(s6, s7)));
        }
        for (; j + 4 <= nkv; j += 4) {
          const d01 = qkQuad(qh, kp + <usize>j * kstride, kstride, headDim);
          const d23 = qk23;
          const s0 = <f32> f64x2.extract_lane(d01, 0) * scale;
          const s1 = <f32> f64x2.extract_lane(d01, 1) * scale;
          const s2 = <f32> f64x2.extract_lane(d23, 0) * scale;
          const s3 = <f32> f64x2.extract_lane(d23, 1) * scale;
          v128.store(scores + (<usize>j << 2), f32x4(s0, s1, s2, s3));
          mx = max<f32>(mx, max<f32>(max<f32>(s0, s1), max<f32>(s2, s3)));
        }
        for (; j + 2 <= nkv; j += 2) {
          const k0 = kp + <usize>j * kstride;
          const d = qkPair(qh, k0, k0 + kstride, headDim);
          const s0 = <f32> f64x2.extract_lane(d, 0) * scale;
          const s1 = <f32> f64x2.extract_lane(d, 1) * scale;
          store<f32>(scores + (<usize>j << 2), s0);
          store<f32>(scores + (<usize>(j + 1) << 2), s1);
          mx = max<f32>(mx, max<f32>(s0, s1));
        }
        for (; j < nkv; j++) {
          const k0 = kp + <usize>j * kstride;
          let dot: f64 = 0;
          for (let i = 0; i < headDim; i++) {
            dot += <f64> (load<f32>(qh + (<usize>i << 2)) * load<f32>(k0 + (<usize>i << 2)));
          }
          const s0 = <f32> dot * scale;
          store<f32>(scores + (<usize>j << 2), s0);
          if (s0 > mx) mx = s0;
        }
        // sliding window: entries before lo are masked (their exps become exact zeros)
        const lo = window > 0 ? max<i32>(0, nkv - window) : 0;
        if (lo > 0) {
          mx = -Infinity;
          for (let jm = lo; jm < nkv; jm++) mx = max<f32>(mx, load<f32>(scores + (<usize>jm << 2)));
        }
        // ggml_vec_soft_max_f32's x86 path, as the reference replays it: v_expf on 4 lanes (a
        // last partial group padded with zeros, as llama.cpp pads rows), each group summed as
        // (e0 + e1) + (e2 + e3) in float and the groups in double
        let sum: f64 = 0;
        const mxv = f32x4.splat(mx);
        for (let jj = 0; jj < nkv; jj += 4) {
          const p = <usize> jj << 2;
          const idx = i32x4.add(i32x4.splat(jj), i32x4(0, 1, 2, 3));
          const live = v128.and(i32x4.ge_s(idx, i32x4.splat(lo)), i32x4.lt_s(idx, i32x4.splat(nkv)));
          const e = v128.and(expGgml4(f32x4.sub(v128.load(scores + p), mxv)), live);
          v128.store(scores + p, e);
          sum += <f64> ((f32x4.extract_lane(e, 0) + f32x4.extract_lane(e, 1)) +
            (f32x4.extract_lane(e, 2) + f32x4.extract_lane(e, 3)));
        }
        const inv = <f32>(1.0 / sum);
        for (let jj = 0; jj < nkv; jj++) {
          const p = <usize>jj << 2;
          let pj = load<f32>(scores + p) * inv;
          if (f16) pj = f16ToF32(f32ToF16(pj));
          store<f32>(scores + p, pj);
        }
        // out = Σ_j p_j · v_j as the reference sums it: each product rounded to float, summed in
        // double in position order, per output element (lanes are elements: the order is exact)
        const j0 = lo;
        let d0 = 0;
        // 8 elements per pass: four independent addition chains
        for (; d0 + 8 <= headDim; d0 += 8) {
          let a0 = f64x2.splat(0);
          let a1 = f64x2.splat(0);
          let a2 = f64x2.splat(0);
          let a3 = f64x2.splat(0);
          for (let jj = j0; jj < nkv; jj++) {
            const pj = f32x4.splat(load<f32>(scores + (<usize>jj << 2)));
            const vrow = vp + <usize>jj * kstride + (<usize>d0 << 2);
            const m = f32x4.mul(pj, v128.load(vrow));
            const m2 = f32x4.mul(pj, v128.load(vrow + 16));
            a0 = f64x2.add(a0, f64x2.promote_low_f32x4(m));
            a1 = f64x2.add(a1, f64x2.promote_low_f32x4(v128.shuffle<f32>(m, m, 2, 3, 2, 3)));
            a2 = f64x2.add(a2, f64x2.promote_low_f32x4(m2));
            a3 = f64x2.add(a3, f64x2.promote_low_f32x4(v128.shuffle<f32>(m2, m2, 2, 3, 2, 3)));
          }
          const o = oh + (<usize>d0 << 2);
          v128.store(o, v128.shuffle<f32>(f32x4.demote_f64x2_zero(a0), f32x4.demote_f64x2_zero(a1), 0, 1, 4, 5));
          v128.store(o + 16, v128.shuffle<f32>(f32x4.demote_f64x2_zero(a2), f32x4.demote_f64x2_zero(a3), 0, 1, 4, 5));
        }
        for (; d0 + 4 <= headDim; d0 += 4) {
          let accLo = f64x2.splat(0);
          let accHi = f64x2.splat(0);
          for (let jj = j0; jj < nkv; jj++) {
            const m = f32x4.mul(
              f32x4.splat(load<f32>(scores + (<usize>jj << 2))),
              v128.load(vp + <usize>jj * kstride + (<usize>d0 << 2)),
            );
            accLo = f64x2.add(accLo, f64x2.promote_low_f32x4(m));
            accHi = f64x2.add(accHi, f64x2.promote_low_f32x4(v128.shuffle<f32>(m, m, 2, 3, 2, 3)));
          }
          v128.store(oh + (<usize>d0 << 2), v128.shuffle<f32>(
            f32x4.demote_f64x2_zero(accLo),
            f32x4.demote_f64x2_zero(accHi),
            0, 1, 4, 5,
          ));
        }
        for (; d0 < headDim; d0++) {
          let acc: f64 = 0;
          for (let jj = j0; jj < nkv; jj++) {
            acc += <f64> (load<f32>(scores + (<usize>jj << 2)) *
              load<f32>(vp + <usize>jj * kstride + (<usize>d0 << 2)));
          }
          store<f32>(oh + (<usize>d0 << 2), <f32> acc);
        }
      }
    }
  }
}

// ----------------------------------------------------------------------------- bandwidth probe

/** Read bytes [p, p + n) (n a multiple of 64) with 128-bit loads; returns a checksum. */
export function streamRead(p: usize, n: usize): i32 {
  let a0 = i32x4.splat(0);
  let a1 = i32x4.splat(0);
  let a2 = i32x4.splat(0);
  let a3 = i32x4.splat(0);
  const end = p + n;
  for (let q = p; q < end; q += 64) {
    a0 = i32x4.add(a0, v128.load(q));
    a1 = i32x4.add(a1, v128.load(q + 16));
    a2 = i32x4.add(a2, v128.load(q + 32));
    a3 = i32x4.add(a3, v128.load(q + 48));
  }
  return hsumI32(i32x4.add(i32x4.add(a0, a1), i32x4.add(a2, a3)));
}

// @ts-ignore: AssemblyScript resolves the extension itself
export * from "./arch_ops";
