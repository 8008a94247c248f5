// Convert activation rows to a weight type's vec_dot type, as ggml's CPU backend does before a
// matmul (quantize_row_q8_0_ref, quantize_row_q8_1_ref, quantize_row_q8_K_ref,
// ggml_cpu_fp32_to_fp16, ggml_cpu_fp32_to_bf16). One invocation per block. Output layout: see
// matmul.wgsl.

struct Params {
  k: u32,
  n_tok: u32,
  a_d_off: u32,
  a_s_off: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> A: array<u32>;

// Elements per block: 1 (f16, bf16), 32 (Q8_0, Q8_1) or 256 (Q8_K).
const BS: u32 = {{BS}}u;

fn pack_q(q0: f32, q1: f32, q2: f32, q3: f32) -> u32 {
  return (bitcast<u32>(i32(q0)) & 0xffu) | ((bitcast<u32>(i32(q1)) & 0xffu) << 8u) |
    ((bitcast<u32>(i32(q2)) & 0xffu) << 16u) | ((bitcast<u32>(i32(q3)) & 0xffu) << 24u);
}

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let gi = (wid.x + wid.y * nwg.x) * 64u + li;
  let nb = P.k / BS;
  if (gi >= nb * P.n_tok) {
    return;
  }
  let t = gi / nb;
  let b = gi % nb;
  let x0 = t * P.k + b * BS;
  //#if KIND_F16
  A[x0] = bitcast<u32>(round_f16(X[x0]));
  //#endif
  //#if KIND_BF16
  A[x0] = bitcast<u32>(round_bf16(X[x0]));
  //#endif
  //#if KIND_Q8_0 || KIND_Q8_1
  var amax = 0.0;
  for (var j = 0u; j < 32u; j = j + 1u) {
    amax = max(amax, abs(X[x0 + j]));
  }
  let d = amax / 127.0;
  let id = select(0.0, 1.0 / d, d != 0.0);
  var sum = 0i;
  for (var w = 0u; w < 8u; w = w + 1u) {
    let q0 = roundf(X[x0 + 4u * w] * id);
    let q1 = roundf(X[x0 + 4u * w + 1u] * id);
    let q2 = roundf(X[x0 + 4u * w + 2u] * id);
    let q3 = roundf(X[x0 + 4u * w + 3u] * id);
    sum = sum + i32(q0) + i32(q1) + i32(q2) + i32(q3);
    A[t * (P.k / 4u) + b * 8u + w] = pack_q(q0, q1, q2, q3);
  }
  A[P.a_d_off + gi] = bitcast<u32>(round_f16(d));
  //#if KIND_Q8_1
  A[P.a_s_off + gi] = bitcast<u32>(round_f16(f32(sum) * d));
  //#endif
  //#endif
  //#if KIND_Q8_K
  var amax = 0.0;
  var vmax = 0.0;
  for (var j = 0u; j < 256u; j = j + 1u) {
    let v = X[x0 + j];
    if (abs(v) > amax) {
      amax = abs(v);
      vmax = v;
    }
  }
  if (amax == 0.0) {
    for (var w = 0u; w < 64u; w = w + 1u) {
      A[t * (P.k / 4u) + b * 64u + w] = 0u;
    }
    for (var g = 0u; g < 16u; g = g + 1u) {
      A[P.a_s_off + gi * 16u + g] = 0u;
    }
    A[P.a_d_off + gi] = 0u;
    return;
  }
  let iscale = -127.0 / vmax;
  for (var g = 0u; g < 16u; g = g + 1u) {
    var bsum = 0i;
    for (var w = 0u; w < 4u; w = w + 1u) {
      let e = x0 + g * 16u + 4u * w;
      let q0 = min(127.0, round(iscale * X[e]));
      let q1 = min(127.0, round(iscale * X[e + 1u]));
      let q2 = min(127.0, round(iscale * X[e + 2u]));
      let q3 = min(127.0, round(iscale * X[e + 3u]));
      bsum = bsum + i32(q0) + i32(q1) + i32(q2) + i32(q3);
      A[t * (P.k / 4u) + b * 64u + g * 4u + w] = pack_q(q0, q1, q2, q3);
    }
    A[P.a_s_off + gi * 16u + g] = bitcast<u32>(bsum);
  }
  A[P.a_d_off + gi] = bitcast<u32>(1.0 / iscale);
  //#endif
}
