// Shared helpers composed in front of every shader (see ../shaders.ts).
//
// Half and bfloat16 conversions are done with integer code so that they are exact and round to nearest
// even on every adapter (WGSL leaves f32→f16 rounding implementation-defined).

// IEEE half bits → f32, exact (subnormals included).
fn f16_to_f32(h: u32) -> f32 {
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  let s = (h & 0x8000u) << 16u;
  if (e == 0u) {
    let v = f32(m) * 5.9604644775390625e-8;
    return select(v, -v, s != 0u);
  }
  if (e == 31u) {
    return bitcast<f32>(s | 0x7f800000u | (m << 13u));
  }
  return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
}

// f32 → IEEE half bits, round to nearest even (ggml_compute_fp32_to_fp16).
fn f32_to_f16_bits(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  let s = (b >> 16u) & 0x8000u;
  let a = b & 0x7fffffffu;
  if (a > 0x7f800000u) {
    return s | 0x7e00u;
  }
  if (a >= 0x477ff000u) {
    return s | 0x7c00u;
  }
  if (a < 0x38800000u) {
    if (a < 0x33000000u) {
      return s;
    }
    let e = a >> 23u;
    let m = (a & 0x7fffffu) | 0x800000u;
    let sh = 126u - e;
    var q = m >> sh;
    let rem = m & ((1u << sh) - 1u);
    let half = 1u << (sh - 1u);
    if (rem > half || (rem == half && (q & 1u) == 1u)) {
      q = q + 1u;
    }
    return s | q;
  }
  let r = a + 0xc8000fffu + ((a >> 13u) & 1u);
  return s | (r >> 13u);
}

// x rounded to the nearest half, as f32.
fn round_f16(x: f32) -> f32 {
  return f16_to_f32(f32_to_f16_bits(x));
}

// x rounded to the nearest bfloat16, as f32 (ggml_compute_fp32_to_bf16).
fn round_bf16(x: f32) -> f32 {
  let u = bitcast<u32>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    return bitcast<f32>(((u >> 16u) | 64u) << 16u);
  }
  return bitcast<f32>(((u + (0x7fffu + ((u >> 16u) & 1u))) >> 16u) << 16u);
}

// C's roundf: halfway cases away from zero.
fn roundf(x: f32) -> f32 {
  let t = trunc(x);
  if (abs(x - t) >= 0.5) {
    return t + sign(x);
  }
  return t;
}

// Sum of the products of the four signed bytes of a and b.
fn dot4i8(a: u32, b: u32) -> i32 {
  //#if PACKED_DOT
  return dot4I8Packed(a, b);
  //#else
  var s = 0i;
  for (var k = 0u; k < 32u; k = k + 8u) {
    s = s + (bitcast<i32>(a << (24u - k)) >> 24u) * (bitcast<i32>(b << (24u - k)) >> 24u);
  }
  return s;
  //#endif
}

// Sum of the four signed bytes of b.
fn sum4i8(b: u32) -> i32 {
  return dot4i8(0x01010101u, b);
}

// ggml_v_expf (ggml-cpu/vec.h, SSE2 lanes without FMA): the exp that llama.cpp's x86-64 CPU
// build uses in softmax and SiLU. Replaying it keeps those ops within an ulp of the goldens
// on every adapter, where WGSL's exp() only promises 3 + 2·|x| ulp.
fn expf_ggml(x: f32) -> f32 {
  // ggml rounds x·log2(e) to an integer by adding and subtracting 1.5·2^23; shader compilers
  // may fold that pair away, so round() (also ties-to-even) stands in for it.
  let n = round(x * 1.4426950216293335);
  let b = (x - n * 0.693145751953125) - n * 1.428606765330187e-6;
  let e = bitcast<u32>(i32(n)) << 23u;
  let k = bitcast<f32>(e + 0x3f800000u);
  let u = b * b;
  let j = ((0.008247390389442444 * b + 0.04189976677298546) * u +
    (0.16668395698070526 * b + 0.4999912679195404)) * u + 0.9999994039535522 * b;
  let an = abs(n);
  if (!(an > 126.0)) {
    return k * j + k;
  }
  let g = select(0u, 0x82000000u, n <= 0.0);
  let s1 = bitcast<f32>(g + 0x7f000000u);
  if (an > 192.0) {
    return s1 * s1;
  }
  let s2 = bitcast<f32>(e - g);
  return (s2 * j + s2) * s1;
}

// Compensated (Neumaier) summation: `acc.x` is the running f32 sum, `acc.y` the rounding error
// lost so far; `acc.x + acc.y` is the sum as if accumulated in double, as ggml's plain C kernels
// (and our reference backend) accumulate dot products and softmax sums in ggml_float.
fn ksum(acc: vec2<f32>, y: f32) -> vec2<f32> {
  let t = acc.x + y;
  var c = acc.y;
  if (abs(acc.x) >= abs(y)) {
    c = c + ((acc.x - t) + y);
  } else {
    c = c + ((y - t) + acc.x);
  }
  return vec2<f32>(t, c);
}

// Two compensated sums added together.
fn ksum2(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let r = ksum(a, b.x);
  return vec2<f32>(r.x, r.y + b.y);
}

// One correction of c towards the float nearest 1 / (hi + lo) (hi ≥ 1 normal, |lo| ≤ ulp(hi)/2).
// c·hi = mc·mh·2^e with 24-bit mantissas mc, mh; since c·hi ≈ 1, 1 − c·hi = d·2^e where
// d = 2^(−e) − mc·mh is small, and 2^(−e) (−e ≥ 46) vanishes mod 2^32: the wrapping u32 product
// gives d exactly, where a float residual (1 − c·hi) would need a fused multiply-add.
fn recip_step(hi: f32, lo: f32, c: f32) -> f32 {
  let bc = bitcast<u32>(c);
  let bh = bitcast<u32>(hi);
  let mc = (bc & 0x7fffffu) | 0x800000u;
  let mh = (bh & 0x7fffffu) | 0x800000u;
  let e = i32((bc >> 23u) & 0xffu) + i32((bh >> 23u) & 0xffu) - 300;
  let d = bitcast<i32>(0u - mc * mh);
  // (1 − c·(hi + lo)) / 2^e, and c's ulp times hi is mh·2^e (half that below a power of two)
  let r = f32(d) - ldexp(c * lo, -e);
  var q = r;
  if (r < 0.0 && mc == 0x800000u) {
    q = 2.0 * r;
  }
  return bitcast<f32>(u32(bitcast<i32>(bc) + i32(round(q / f32(mh)))));
}

// The float nearest 1 / (hi + lo), as ggml rounds 1 / (a sum held in double): two corrections of
// 1 / hi (which WGSL computes within 2.5 ulp) land on it whatever the division's error.
fn recip_pair(hi: f32, lo: f32) -> f32 {
  let c = 1.0 / hi;
  return recip_step(hi, lo, recip_step(hi, lo, c));
}

// One correction of q towards the float nearest (hi + lo) / n (hi > 0 normal, |lo| ≤ ulp(hi)/2,
// q within a few ulps, n < 2^31): hi = mh·2^(eq + s) and q·n = mq·n·2^eq with eq the exponent
// of q's ulp, so (hi − q·n) / 2^eq = mh·2^s − mq·n, a small integer the wrapping u32 arithmetic
// gives exactly.
fn div_step(hi: f32, lo: f32, n: u32, q: f32) -> f32 {
  let bq = bitcast<u32>(q);
  let bh = bitcast<u32>(hi);
  let mq = (bq & 0x7fffffu) | 0x800000u;
  let mh = (bh & 0x7fffffu) | 0x800000u;
  let s = ((bh >> 23u) & 0xffu) - ((bq >> 23u) & 0xffu);
  let d = bitcast<i32>((mh << s) - mq * n);
  let r = f32(d) + ldexp(lo, 150 - i32((bq >> 23u) & 0xffu));
  var t = r;
  if (r < 0.0 && mq == 0x800000u) {
    t = 2.0 * r;
  }
  return bitcast<f32>(u32(bitcast<i32>(bq) + i32(round(t / f32(n)))));
}

// The float nearest (hi + lo) / n for a sum held as a compensated pair, as ggml rounds a double
// sum divided by the row length (`mean = sum/ne00`); plain division where the quotient or the
// sum is subnormal or zero.
fn div_pair(hi: f32, lo: f32, n: u32) -> f32 {
  let q = hi / f32(n);
  if (((bitcast<u32>(q) >> 23u) & 0xffu) == 0u || ((bitcast<u32>(hi) >> 23u) & 0xffu) == 0u) {
    return q;
  }
  return div_step(hi, lo, n, div_step(hi, lo, n, q));
}
