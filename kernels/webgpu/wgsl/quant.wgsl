// Block decoding, one section per GGML type; ../shaders.ts composes exactly one section into a
// shader. Each section defines:
//   BLOCK_ELEMS, BLOCK_BYTES   the block geometry (1 element for float types)
//   w_elem(rb, i) -> f32       element i of the row starting at byte rb (ggml dequantize_row_*)
// and, after its dot marker line, the row dot product as ggml's vec_dot_<type>_<vec_dot_type>
// computes it: integer-exact sums per block, then its float scaling and accumulation:
//   Acc, acc_zero(), acc_add(acc, wb, t, b), acc_final(acc) -> f32
// where acc_add adds block b (at byte wb) of a weight row · block b of activation row t.
// K-quants replay ggml's 8-lane float sums only with SINGLE_LANE (one invocation per row, blocks
// in order, so the result is ggml's to the bit); with many lanes per row the order differs
// anyway and the cheaper packed-dot form is used. Q4_K and Q6_K follow this engine's own order
// (float result per block, blocks in order) on every path.
// The dot part is only composed into matmul.wgsl, which defines the activation accessors it
// uses (a_f, a_q4, a_d, a_s, a_bsum).

// Weights are bound as `W: array<u32>` holding the raw GGUF block bytes (little-endian,
// padded to 4 bytes), so every format is read through these loads at arbitrary byte offsets.

// One byte of W at byte offset `b`.
fn ld8(b: u32) -> u32 {
  return (W[b >> 2u] >> ((b & 3u) * 8u)) & 0xffu;
}

// A little-endian u16 of W at even byte offset `b`.
fn ld16(b: u32) -> u32 {
  return (W[b >> 2u] >> ((b & 2u) * 8u)) & 0xffffu;
}

// Four bytes of W at any byte offset `b` (little-endian).
fn ld32(b: u32) -> u32 {
  let i = b >> 2u;
  let s = (b & 3u) * 8u;
  if (s == 0u) {
    return W[i];
  }
  return (W[i] >> s) | (W[i + 1u] << (32u - s));
}

// The IEEE half at even byte offset `b` of W, as f32 (exact). With shader-f16 (matmul shaders
// only, after the startup self-check) the hardware converts it, reading W a second time as
// `WH: array<f16>`; a GPU flushing half subnormals fails the self-check (its inputs hold some).
fn ldh(b: u32) -> f32 {
  //#if F16_NATIVE
  return f32(WH[b >> 1u]);
  //#else
  return f16_to_f32(ld16(b));
  //#endif
}

// The four bytes of v as unsigned / signed integers.
fn u8x4(v: u32) -> vec4<i32> {
  return vec4<i32>(vec4<u32>(v & 0xffu, (v >> 8u) & 0xffu, (v >> 16u) & 0xffu, v >> 24u));
}
fn i8x4(v: u32) -> vec4<i32> {
  return vec4<i32>(bitcast<i32>(v << 24u), bitcast<i32>(v << 16u), bitcast<i32>(v << 8u),
    bitcast<i32>(v)) >> vec4<u32>(24u);
}

//@section F32
const BLOCK_ELEMS: u32 = 1u;
const BLOCK_BYTES: u32 = 4u;
fn w_elem(rb: u32, i: u32) -> f32 {
  return bitcast<f32>(W[(rb >> 2u) + i]);
}
//@dot
fn block_dot(wb: u32, t: u32, b: u32) -> f32 {
  return bitcast<f32>(W[wb >> 2u]) * a_f(t, b);
}

// ggml_vec_dot_f32/f16/bf16 (scalar) sum float products in double: compensated f32 here.
alias Acc = vec2<f32>;
fn acc_zero() -> Acc {
  return vec2<f32>(0.0, 0.0);
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  return ksum(a, block_dot(wb, t, b));
}
fn acc_final(a: Acc) -> f32 {
  return a.x + a.y;
}

//@section F16
const BLOCK_ELEMS: u32 = 1u;
const BLOCK_BYTES: u32 = 2u;
fn w_elem(rb: u32, i: u32) -> f32 {
  return ldh(rb + 2u * i);
}
//@dot
fn block_dot(wb: u32, t: u32, b: u32) -> f32 {
  return ldh(wb) * a_f(t, b);
}

// ggml_vec_dot_f32/f16/bf16 (scalar) sum float products in double: compensated f32 here.
alias Acc = vec2<f32>;
fn acc_zero() -> Acc {
  return vec2<f32>(0.0, 0.0);
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  return ksum(a, block_dot(wb, t, b));
}
fn acc_final(a: Acc) -> f32 {
  return a.x + a.y;
}

//@section BF16
const BLOCK_ELEMS: u32 = 1u;
const BLOCK_BYTES: u32 = 2u;
fn w_elem(rb: u32, i: u32) -> f32 {
  return bitcast<f32>(ld16(rb + 2u * i) << 16u);
}
//@dot
fn block_dot(wb: u32, t: u32, b: u32) -> f32 {
  return bitcast<f32>(ld16(wb) << 16u) * a_f(t, b);
}

// ggml_vec_dot_f32/f16/bf16 (scalar) sum float products in double: compensated f32 here.
alias Acc = vec2<f32>;
fn acc_zero() -> Acc {
  return vec2<f32>(0.0, 0.0);
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  return ksum(a, block_dot(wb, t, b));
}
fn acc_final(a: Acc) -> f32 {
  return a.x + a.y;
}

//@section Q4_0
// block_q4_0: d (f16), qs[16]; element j < 16 is the low nibble of qs[j], j ≥ 16 the high one.
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 18u;
fn w_elem(rb: u32, i: u32) -> f32 {
  let bb = rb + (i / 32u) * BLOCK_BYTES;
  let j = i % 32u;
  let q = (ld8(bb + 2u + (j % 16u)) >> ((j / 16u) * 4u)) & 15u;
  return (f32(q) - 8.0) * ldh(bb);
}
//@dot
fn block_dot(wb: u32, t: u32, b: u32) -> f32 {
  var s = 0i;
  var sa = 0i;
  for (var i = 0u; i < 4u; i = i + 1u) {
    let q = ld32(wb + 2u + 4u * i);
    let a0 = a_q4(t, b * 8u + i);
    let a1 = a_q4(t, b * 8u + 4u + i);
    s = s + dot4i8(q & 0x0f0f0f0fu, a0) + dot4i8((q >> 4u) & 0x0f0f0f0fu, a1);
    sa = sa + sum4i8(a0) + sum4i8(a1);
  }
  s = s - 8i * sa;
  return f32(s) * ldh(wb) * a_d(t, b);
}

// ggml accumulates block results in a float, in block order.
alias Acc = f32;
fn acc_zero() -> Acc {
  return 0.0;
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  return a + block_dot(wb, t, b);
}
fn acc_final(a: Acc) -> f32 {
  return a;
}

//@section Q4_1
// block_q4_1: d, m (f16), qs[16]; x = d·q + m.
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 20u;
fn w_elem(rb: u32, i: u32) -> f32 {
  let bb = rb + (i / 32u) * BLOCK_BYTES;
  let j = i % 32u;
  let q = (ld8(bb + 4u + (j % 16u)) >> ((j / 16u) * 4u)) & 15u;
  return f32(q) * ldh(bb) + ldh(bb + 2u);
}
//@dot
fn block_dot(wb: u32, t: u32, b: u32) -> f32 {
  var s = 0i;
  for (var i = 0u; i < 4u; i = i + 1u) {
    let q = ld32(wb + 4u + 4u * i);
    s = s + dot4i8(q & 0x0f0f0f0fu, a_q4(t, b * 8u + i));
    s = s + dot4i8((q >> 4u) & 0x0f0f0f0fu, a_q4(t, b * 8u + 4u + i));
  }
  return (ldh(wb) * a_d(t, b)) * f32(s) + ldh(wb + 2u) * a_s(t, b);
}

// ggml accumulates block results in a float, in block order.
alias Acc = f32;
fn acc_zero() -> Acc {
  return 0.0;
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  return a + block_dot(wb, t, b);
}
fn acc_final(a: Acc) -> f32 {
  return a;
}

//@section Q5_0
// block_q5_0: d (f16), qh[4] (bit j = 5th bit of element j), qs[16]; x = d·(q − 16).
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 22u;
fn w_elem(rb: u32, i: u32) -> f32 {
  let bb = rb + (i / 32u) * BLOCK_BYTES;
  let j = i % 32u;
  let qh = ld32(bb + 2u);
  let q = ((ld8(bb + 6u + (j % 16u)) >> ((j / 16u) * 4u)) & 15u) | (((qh >> j) & 1u) << 4u);
  return (f32(q) - 16.0) * ldh(bb);
}
//@dot
// Four bits of h (from bit k) spread to bit 4 of four bytes.
fn spread4(h: u32, k: u32) -> u32 {
  let v = (h >> k) & 15u;
  return ((v & 1u) | ((v & 2u) << 7u) | ((v & 4u) << 14u) | ((v & 8u) << 21u)) << 4u;
}
fn block_dot(wb: u32, t: u32, b: u32) -> f32 {
  let qh = ld32(wb + 2u);
  var s = 0i;
  var sa = 0i;
  for (var i = 0u; i < 4u; i = i + 1u) {
    let q = ld32(wb + 6u + 4u * i);
    let a0 = a_q4(t, b * 8u + i);
    let a1 = a_q4(t, b * 8u + 4u + i);
    s = s + dot4i8((q & 0x0f0f0f0fu) | spread4(qh, 4u * i), a0);
    s = s + dot4i8(((q >> 4u) & 0x0f0f0f0fu) | spread4(qh, 16u + 4u * i), a1);
    sa = sa + sum4i8(a0) + sum4i8(a1);
  }
  s = s - 16i * sa;
  return (ldh(wb) * a_d(t, b)) * f32(s);
}

// ggml accumulates block results in a float, in block order.
alias Acc = f32;
fn acc_zero() -> Acc {
  return 0.0;
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  return a + block_dot(wb, t, b);
}
fn acc_final(a: Acc) -> f32 {
  return a;
}

//@section Q5_1
// block_q5_1: d, m (f16), qh[4], qs[16]; x = d·q + m.
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 24u;
fn w_elem(rb: u32, i: u32) -> f32 {
  let bb = rb + (i / 32u) * BLOCK_BYTES;
  let j = i % 32u;
  let qh = ld32(bb + 4u);
  let q = ((ld8(bb + 8u + (j % 16u)) >> ((j / 16u) * 4u)) & 15u) | (((qh >> j) & 1u) << 4u);
  return f32(q) * ldh(bb) + ldh(bb + 2u);
}
//@dot
fn spread4(h: u32, k: u32) -> u32 {
  let v = (h >> k) & 15u;
  return ((v & 1u) | ((v & 2u) << 7u) | ((v & 4u) << 14u) | ((v & 8u) << 21u)) << 4u;
}
fn block_dot(wb: u32, t: u32, b: u32) -> f32 {
  let qh = ld32(wb + 4u);
  var s = 0i;
  for (var i = 0u; i < 4u; i = i + 1u) {
    let q = ld32(wb + 8u + 4u * i);
    s = s + dot4i8((q & 0x0f0f0f0fu) | spread4(qh, 4u * i), a_q4(t, b * 8u + i));
    s = s + dot4i8(((q >> 4u) & 0x0f0f0f0fu) | spread4(qh, 16u + 4u * i), a_q4(t, b * 8u + 4u + i));
  }
  return (ldh(wb) * a_d(t, b)) * f32(s) + ldh(wb + 2u) * a_s(t, b);
}

// ggml accumulates block results in a float, in block order.
alias Acc = f32;
fn acc_zero() -> Acc {
  return 0.0;
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  return a + block_dot(wb, t, b);
}
fn acc_final(a: Acc) -> f32 {
  return a;
}

//@section Q8_0
// block_q8_0: d (f16), qs[32] (int8).
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 34u;
fn w_elem(rb: u32, i: u32) -> f32 {
  let bb = rb + (i / 32u) * BLOCK_BYTES;
  let q = bitcast<i32>(ld8(bb + 2u + (i % 32u)) << 24u) >> 24u;
  return f32(q) * ldh(bb);
}
//@dot
fn block_dot(wb: u32, t: u32, b: u32) -> f32 {
  var s = 0i;
  for (var i = 0u; i < 8u; i = i + 1u) {
    s = s + dot4i8(ld32(wb + 2u + 4u * i), a_q4(t, b * 8u + i));
  }
  return f32(s) * (ldh(wb) * a_d(t, b));
}

// ggml accumulates block results in a float, in block order.
alias Acc = f32;
fn acc_zero() -> Acc {
  return 0.0;
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  return a + block_dot(wb, t, b);
}
fn acc_final(a: Acc) -> f32 {
  return a;
}

//@section Q2_K
// block_q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin (f16).
// Element n·128 + j·32 + l is (qs[n·32 + l] >> 2j) & 3 with scale byte n·8 + 2j + l/16.
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 84u;
fn w_elem(rb: u32, i: u32) -> f32 {
  let bb = rb + (i / 256u) * BLOCK_BYTES;
  let e = i % 256u;
  let n = e / 128u;
  let j = (e % 128u) / 32u;
  let l = e % 32u;
  let sc = ld8(bb + e / 16u);
  let q = (ld8(bb + 16u + n * 32u + l) >> (2u * j)) & 3u;
  let d = ldh(bb + 80u);
  let dmin = ldh(bb + 82u);
  return d * f32(sc & 15u) * f32(q) - dmin * f32(sc >> 4u);
}
//@dot
fn block_dot(wb: u32, t: u32, b: u32) -> f32 {
  var summs = 0i;
  var isum = 0i;
  for (var g = 0u; g < 16u; g = g + 1u) {
    let sc = ld8(wb + g);
    summs = summs + a_bsum(t, b * 16u + g) * i32(sc >> 4u);
    let n = g / 8u;
    let j = (g % 8u) / 2u;
    let h = g % 2u;
    var s = 0i;
    for (var i = 0u; i < 4u; i = i + 1u) {
      let q = (W[(wb + 16u + n * 32u + h * 16u) / 4u + i] >> (2u * j)) & 0x03030303u;
      s = s + dot4i8(q, a_q4(t, b * 64u + g * 4u + i));
    }
    isum = isum + i32(sc & 15u) * s;
  }
  let yd = a_d(t, b);
  let dall = yd * ldh(wb + 80u);
  let dmin = yd * ldh(wb + 82u);
  return dall * f32(isum) - dmin * f32(summs);
}

// ggml accumulates block results in a float, in block order.
alias Acc = f32;
fn acc_zero() -> Acc {
  return 0.0;
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  return a + block_dot(wb, t, b);
}
fn acc_final(a: Acc) -> f32 {
  return a;
}

//@section Q3_K
// block_q3_K: hmask[32], qs[64], scales[12] (16 × 6 bits, offset 32), d (f16).
// Element n·128 + j·32 + l is ((qs[32n + l] >> 2j) & 3) − (hmask[l] bit (4n + j) ? 0 : 4).
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 110u;
fn q3_scale(bb: u32, k: u32) -> i32 {
  let lo = select(ld8(bb + 96u + k - 8u) >> 4u, ld8(bb + 96u + k) & 15u, k < 8u);
  let hi = (ld8(bb + 104u + (k % 4u)) >> (2u * (k / 4u))) & 3u;
  return i32(lo | (hi << 4u)) - 32i;
}
fn w_elem(rb: u32, i: u32) -> f32 {
  let bb = rb + (i / 256u) * BLOCK_BYTES;
  let e = i % 256u;
  let n = e / 128u;
  let j = (e % 128u) / 32u;
  let l = e % 32u;
  let q = i32((ld8(bb + 32u + n * 32u + l) >> (2u * j)) & 3u);
  let hb = (ld8(bb + l) >> (4u * n + j)) & 1u;
  let dl = ldh(bb + 108u) * f32(q3_scale(bb, e / 16u));
  return dl * f32(q - select(4i, 0i, hb == 1u));
}
//@dot
//#if SINGLE_LANE
// ggml's K-quant dot products keep 8 integer lanes per block (element index mod 8), add
// d · lane into 8 float sums across blocks, subtract dmin · Σ bsum · min from a float
// `sumf`, and add the 8 float sums to sumf at the end; replayed exactly.
struct Acc {
  sumf: f32,
  lo: vec4<f32>, // float sums of lanes 0..3
  hi: vec4<f32>, // lanes 4..7
}
fn acc_zero() -> Acc {
  return Acc(0.0, vec4<f32>(0.0), vec4<f32>(0.0));
}
fn acc_final(a: Acc) -> f32 {
  return a.sumf + a.lo.x + a.lo.y + a.lo.z + a.lo.w + a.hi.x + a.hi.y + a.hi.z + a.hi.w;
}
// Add one block's integer lanes scaled by d, and subtract `mins`.
fn acc_lanes(a: Acc, lo: vec4<i32>, hi: vec4<i32>, d: f32, mins: f32) -> Acc {
  return Acc(a.sumf - mins, a.lo + d * vec4<f32>(lo), a.hi + d * vec4<f32>(hi));
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  var lo = vec4<i32>(0);
  var hi = vec4<i32>(0);
  for (var g = 0u; g < 16u; g = g + 1u) {
    let n = g / 8u;
    let j = (g % 8u) / 2u;
    let h = g % 2u;
    let sc = q3_scale(wb, g);
    for (var i = 0u; i < 4u; i = i + 1u) {
      let q = (ld32(wb + 32u + n * 32u + h * 16u + 4u * i) >> (2u * j)) & 0x03030303u;
      let hb = (ld32(wb + h * 16u + 4u * i) >> (4u * n + j)) & 0x01010101u;
      let p = sc * ((u8x4(q | (hb << 2u)) - vec4<i32>(4)) * i8x4(a_q4(t, b * 64u + g * 4u + i)));
      if (i % 2u == 0u) {
        lo = lo + p;
      } else {
        hi = hi + p;
      }
    }
  }
  return acc_lanes(a, lo, hi, ldh(wb + 108u) * a_d(t, b), 0.0);
}
//#else
// Many lanes per row (GPUs): packed dot products, float result per block.
fn block_dot(wb: u32, t: u32, b: u32) -> f32 {
  var isum = 0i;
  for (var g = 0u; g < 16u; g = g + 1u) {
    let n = g / 8u;
    let j = (g % 8u) / 2u;
    let h = g % 2u;
    var s = 0i;
    var sa = 0i;
    for (var i = 0u; i < 4u; i = i + 1u) {
      let q = (ld32(wb + 32u + n * 32u + h * 16u + 4u * i) >> (2u * j)) & 0x03030303u;
      let hb = (ld32(wb + h * 16u + 4u * i) >> (4u * n + j)) & 0x01010101u;
      let a = a_q4(t, b * 64u + g * 4u + i);
      s = s + dot4i8(q | (hb << 2u), a);
      sa = sa + sum4i8(a);
    }
    isum = isum + q3_scale(wb, g) * (s - 4i * sa);
  }
  return (ldh(wb + 108u) * a_d(t, b)) * f32(isum);
}
alias Acc = f32;
fn acc_zero() -> Acc {
  return 0.0;
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  return a + block_dot(wb, t, b);
}
fn acc_final(a: Acc) -> f32 {
  return a;
}
//#endif

//@section Q4_K
// block_q4_K: d, dmin (f16), scales[12] (8 × 6-bit scale + 8 × 6-bit min), qs[128].
// 64-element chunk j: low nibbles of qs[32j..] are sub-block 2j, high nibbles 2j + 1.
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 144u;
// get_scale_min_k4: (scale, min) of sub-block k.
fn k4_scale_min(bb: u32, k: u32) -> vec2<u32> {
  if (k < 4u) {
    return vec2<u32>(ld8(bb + 4u + k) & 63u, ld8(bb + 8u + k) & 63u);
  }
  let sc = (ld8(bb + 8u + k) & 15u) | ((ld8(bb + k) >> 6u) << 4u);
  let m = (ld8(bb + 8u + k) >> 4u) | ((ld8(bb + 4u + k) >> 6u) << 4u);
  return vec2<u32>(sc, m);
}
fn w_elem(rb: u32, i: u32) -> f32 {
  let bb = rb + (i / 256u) * BLOCK_BYTES;
  let e = i % 256u;
  let j = e / 64u;
  let r = e % 64u;
  let sm = k4_scale_min(bb, 2u * j + r / 32u);
  let q = (ld8(bb + 16u + 32u * j + (r % 32u)) >> (4u * (r / 32u))) & 15u;
  let d = ldh(bb) * f32(sm.x);
  let m = ldh(bb + 2u) * f32(sm.y);
  return d * f32(q) - m;
}
//@dot
// Not ggml's generic order: this engine's Q4_K order (kernels/quant/kquants_vecdot.ts,
// vecDotQ4K), exact integer sums per block, then sumf += (d·yd)·isum − (dmin·yd)·summs, blocks in
// order, so one lane per row (SINGLE_LANE) gives the reference's bits.
fn block_dot(wb: u32, t: u32, b: u32) -> f32 {
  var isum = 0i;
  var summs = 0i;
  for (var j = 0u; j < 4u; j = j + 1u) {
    let sm0 = k4_scale_min(wb, 2u * j);
    let sm1 = k4_scale_min(wb, 2u * j + 1u);
    var s0 = 0i;
    var s1 = 0i;
    for (var i = 0u; i < 8u; i = i + 1u) {
      let q = W[(wb + 16u + 32u * j) / 4u + i];
      s0 = s0 + dot4i8(q & 0x0f0f0f0fu, a_q4(t, b * 64u + j * 16u + i));
      s1 = s1 + dot4i8((q >> 4u) & 0x0f0f0f0fu, a_q4(t, b * 64u + j * 16u + 8u + i));
    }
    isum = isum + i32(sm0.x) * s0 + i32(sm1.x) * s1;
    summs = summs + i32(sm0.y) * (a_bsum(t, b * 16u + 4u * j) + a_bsum(t, b * 16u + 4u * j + 1u));
    summs = summs + i32(sm1.y) * (a_bsum(t, b * 16u + 4u * j + 2u) + a_bsum(t, b * 16u + 4u * j + 3u));
  }
  let yd = a_d(t, b);
  let d = ldh(wb) * yd;
  let dmin = ldh(wb + 2u) * yd;
  return d * f32(isum) - dmin * f32(summs);
}
alias Acc = f32;
fn acc_zero() -> Acc {
  return 0.0;
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  return a + block_dot(wb, t, b);
}
fn acc_final(a: Acc) -> f32 {
  return a;
}

//@section Q5_K
// block_q5_K: d, dmin (f16), scales[12], qh[32], qs[128]; like Q4_K plus a 5th bit:
// sub-block k's elements take bit k of qh[l].
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 176u;
fn k4_scale_min(bb: u32, k: u32) -> vec2<u32> {
  if (k < 4u) {
    return vec2<u32>(ld8(bb + 4u + k) & 63u, ld8(bb + 8u + k) & 63u);
  }
  let sc = (ld8(bb + 8u + k) & 15u) | ((ld8(bb + k) >> 6u) << 4u);
  let m = (ld8(bb + 8u + k) >> 4u) | ((ld8(bb + 4u + k) >> 6u) << 4u);
  return vec2<u32>(sc, m);
}
fn w_elem(rb: u32, i: u32) -> f32 {
  let bb = rb + (i / 256u) * BLOCK_BYTES;
  let e = i % 256u;
  let j = e / 64u;
  let r = e % 64u;
  let k = 2u * j + r / 32u;
  let sm = k4_scale_min(bb, k);
  let l = r % 32u;
  let q = ((ld8(bb + 48u + 32u * j + l) >> (4u * (r / 32u))) & 15u) | (((ld8(bb + 16u + l) >> k) & 1u) << 4u);
  let d = ldh(bb) * f32(sm.x);
  let m = ldh(bb + 2u) * f32(sm.y);
  return d * f32(q) - m;
}
//@dot
//#if SINGLE_LANE
// ggml's K-quant dot products keep 8 integer lanes per block (element index mod 8), add
// d · lane into 8 float sums across blocks, subtract dmin · Σ bsum · min from a float
// `sumf`, and add the 8 float sums to sumf at the end; replayed exactly.
struct Acc {
  sumf: f32,
  lo: vec4<f32>, // float sums of lanes 0..3
  hi: vec4<f32>, // lanes 4..7
}
fn acc_zero() -> Acc {
  return Acc(0.0, vec4<f32>(0.0), vec4<f32>(0.0));
}
fn acc_final(a: Acc) -> f32 {
  return a.sumf + a.lo.x + a.lo.y + a.lo.z + a.lo.w + a.hi.x + a.hi.y + a.hi.z + a.hi.w;
}
// Add one block's integer lanes scaled by d, and subtract `mins`.
fn acc_lanes(a: Acc, lo: vec4<i32>, hi: vec4<i32>, d: f32, mins: f32) -> Acc {
  return Acc(a.sumf - mins, a.lo + d * vec4<f32>(lo), a.hi + d * vec4<f32>(hi));
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  var lo = vec4<i32>(0);
  var hi = vec4<i32>(0);
  var summs = 0i;
  for (var j = 0u; j < 4u; j = j + 1u) {
    let sm0 = k4_scale_min(wb, 2u * j);
    let sm1 = k4_scale_min(wb, 2u * j + 1u);
    for (var i = 0u; i < 8u; i = i + 1u) {
      let q = W[(wb + 48u + 32u * j) / 4u + i];
      var q0 = q & 0x0f0f0f0fu;
      var q1 = (q >> 4u) & 0x0f0f0f0fu;
      let hq = W[(wb + 16u) / 4u + i];
      q0 = q0 | (((hq >> (2u * j)) & 0x01010101u) << 4u);
      q1 = q1 | (((hq >> (2u * j + 1u)) & 0x01010101u) << 4u);
      let p = i32(sm0.x) * (u8x4(q0) * i8x4(a_q4(t, b * 64u + j * 16u + i))) +
        i32(sm1.x) * (u8x4(q1) * i8x4(a_q4(t, b * 64u + j * 16u + 8u + i)));
      if (i % 2u == 0u) {
        lo = lo + p;
      } else {
        hi = hi + p;
      }
    }
    summs = summs + i32(sm0.y) * (a_bsum(t, b * 16u + 4u * j) + a_bsum(t, b * 16u + 4u * j + 1u));
    summs = summs + i32(sm1.y) * (a_bsum(t, b * 16u + 4u * j + 2u) + a_bsum(t, b * 16u + 4u * j + 3u));
  }
  let yd = a_d(t, b);
  let d = ldh(wb) * yd;
  let dmin = ldh(wb + 2u) * yd;
  return acc_lanes(a, lo, hi, d, dmin * f32(summs));
}
//#else
// Many lanes per row (GPUs): packed dot products, float result per block.
fn block_dot(wb: u32, t: u32, b: u32) -> f32 {
  var isum = 0i;
  var summs = 0i;
  for (var j = 0u; j < 4u; j = j + 1u) {
    let sm0 = k4_scale_min(wb, 2u * j);
    let sm1 = k4_scale_min(wb, 2u * j + 1u);
    var s0 = 0i;
    var s1 = 0i;
    for (var i = 0u; i < 8u; i = i + 1u) {
      let q = W[(wb + 48u + 32u * j) / 4u + i];
      let h = W[(wb + 16u) / 4u + i];
      let lo = (q & 0x0f0f0f0fu) | (((h >> (2u * j)) & 0x01010101u) << 4u);
      let hi = ((q >> 4u) & 0x0f0f0f0fu) | (((h >> (2u * j + 1u)) & 0x01010101u) << 4u);
      s0 = s0 + dot4i8(lo, a_q4(t, b * 64u + j * 16u + i));
      s1 = s1 + dot4i8(hi, a_q4(t, b * 64u + j * 16u + 8u + i));
    }
    isum = isum + i32(sm0.x) * s0 + i32(sm1.x) * s1;
    summs = summs + i32(sm0.y) * (a_bsum(t, b * 16u + 4u * j) + a_bsum(t, b * 16u + 4u * j + 1u));
    summs = summs + i32(sm1.y) * (a_bsum(t, b * 16u + 4u * j + 2u) + a_bsum(t, b * 16u + 4u * j + 3u));
  }
  let yd = a_d(t, b);
  let d = ldh(wb) * yd;
  let dmin = ldh(wb + 2u) * yd;
  return d * f32(isum) - dmin * f32(summs);
}
alias Acc = f32;
fn acc_zero() -> Acc {
  return 0.0;
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  return a + block_dot(wb, t, b);
}
fn acc_final(a: Acc) -> f32 {
  return a;
}
//#endif

//@section Q6_K
// block_q6_K: ql[128], qh[64], scales[16] (int8), d (f16). Element n·128 + g·32 + l is
// (nibble (g / 2) of ql[64n + 32(g % 2) + l]) | ((qh[32n + l] >> 2g) & 3) << 4, minus 32,
// with scale n·8 + 2g + l/16.
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 210u;
fn q6_scale(bb: u32, k: u32) -> i32 {
  return bitcast<i32>(ld8(bb + 192u + k) << 24u) >> 24u;
}
fn w_elem(rb: u32, i: u32) -> f32 {
  let bb = rb + (i / 256u) * BLOCK_BYTES;
  let e = i % 256u;
  let n = e / 128u;
  let g = (e % 128u) / 32u;
  let l = e % 32u;
  let lo = (ld8(bb + 64u * n + 32u * (g % 2u) + l) >> (4u * (g / 2u))) & 15u;
  let hi = (ld8(bb + 128u + 32u * n + l) >> (2u * g)) & 3u;
  let q = i32(lo | (hi << 4u)) - 32i;
  return ldh(bb + 208u) * f32(q6_scale(bb, 8u * n + 2u * g + l / 16u)) * f32(q);
}
//@dot
// Not ggml's generic order: this engine's Q6_K order (kernels/quant/kquants_vecdot.ts,
// vecDotQ6_KQ8_K), exact integer sums per block (Σ_g scale_g · (Σ q·a − 32·bsum_g), q the
// unsigned 6-bit quant), then sumf += (d·yd)·isum, blocks in order, so one lane per row
// (SINGLE_LANE) gives the reference's bits.
fn block_dot(wb: u32, t: u32, b: u32) -> f32 {
  var isum = 0i;
  for (var sb = 0u; sb < 16u; sb = sb + 1u) {
    let n = sb / 8u;
    let g = (sb % 8u) / 2u;
    let h = sb % 2u;
    var s = 0i;
    for (var i = 0u; i < 4u; i = i + 1u) {
      let l = h * 16u + 4u * i;
      let lo = (ld32(wb + 64u * n + 32u * (g % 2u) + l) >> (4u * (g / 2u))) & 0x0f0f0f0fu;
      let hi = (ld32(wb + 128u + 32u * n + l) >> (2u * g)) & 0x03030303u;
      s = s + dot4i8(lo | (hi << 4u), a_q4(t, b * 64u + sb * 4u + i));
    }
    isum = isum + q6_scale(wb, 8u * n + 2u * g + h) * (s - 32i * a_bsum(t, b * 16u + sb));
  }
  return (ldh(wb + 208u) * a_d(t, b)) * f32(isum);
}
alias Acc = f32;
fn acc_zero() -> Acc {
  return 0.0;
}
fn acc_add(a: Acc, wb: u32, t: u32, b: u32) -> Acc {
  return a + block_dot(wb, t, b);
}
fn acc_final(a: Acc) -> f32 {
  return a;
}
