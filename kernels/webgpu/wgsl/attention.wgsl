// Causal attention over the GPU-resident KV cache, as ggml computes it without flash attention:
//   scores: S[t, h, j] = (q[t, h, :] · k[j, kvh, :]) · scale   for lo(t) ≤ j ≤ pos0 + t
//   (lo(t) = pos0 + t + 1 − window with a sliding window, else 0: the cells llama.cpp masks)
//   (softmax.wgsl normalises each S row in place)
//   pv:     out[t, h, d] = Σ_j S[t, h, j] · v[j, kvh, d]
// with kvh = h / (n_heads / n_kv_heads) (grouped-query attention). With an f16 cache, q and the
// probabilities are rounded to f16 first, since ggml's mul_mat converts its f32 operand to the
// f16 cache's vec_dot type.

struct Params {
  rows: u32,
  n_heads: u32,
  n_kv_heads: u32,
  head_dim: u32,
  pos0: u32,
  row_off: u32,
  stride_w: u32,
  n_max: u32, // S row length: pos0 + rows
  scale: f32,
  window: u32, // sliding window, 0 for none
}

// First cell row t attends to.
fn first_cell(t: u32) -> u32 {
  let n = P.pos0 + t + 1u;
  if (P.window == 0u || n <= P.window) {
    return 0u;
  }
  return n - P.window;
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> Q: array<f32>; // q (scores) or out (pv)
@group(0) @binding(2) var<storage, read_write> C: array<u32>; // K (scores) or V (pv) cache
@group(0) @binding(3) var<storage, read_write> S: array<f32>;

fn cache_at(j: u32, c: u32) -> f32 {
  //#if KV_F16
  return f16_to_f32((C[j * P.stride_w + c / 2u] >> ((c & 1u) * 16u)) & 0xffffu);
  //#else
  return bitcast<f32>(C[j * P.stride_w + c]);
  //#endif
}

fn operand(x: f32) -> f32 {
  //#if KV_F16
  return round_f16(x);
  //#else
  return x;
  //#endif
}

@compute @workgroup_size(64)
fn scores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let j = wid.x * 64u + li;
  let h = wid.y;
  let t = wid.z;
  if (j > P.pos0 + t || j < first_cell(t)) {
    return;
  }
  let kvh = h / (P.n_heads / P.n_kv_heads);
  let qb = ((P.row_off + t) * P.n_heads + h) * P.head_dim;
  let kb = kvh * P.head_dim;
  var s = vec2<f32>(0.0, 0.0);
  for (var d = 0u; d < P.head_dim; d = d + 1u) {
    s = ksum(s, operand(Q[qb + d]) * cache_at(j, kb + d));
  }
  S[(t * P.n_heads + h) * P.n_max + j] = (s.x + s.y) * P.scale;
}

@compute @workgroup_size(64)
fn pv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let d = wid.x * 64u + li;
  let h = wid.y;
  let t = wid.z;
  if (d >= P.head_dim) {
    return;
  }
  let kvh = h / (P.n_heads / P.n_kv_heads);
  let sb = (t * P.n_heads + h) * P.n_max;
  let n = P.pos0 + t + 1u;
  var acc = vec2<f32>(0.0, 0.0);
  // masked cells have probability 0: adding their zeros would change nothing
  for (var j = first_cell(t); j < n; j = j + 1u) {
    acc = ksum(acc, operand(S[sb + j]) * cache_at(j, kvh * P.head_dim + d));
  }
  Q[((P.row_off + t) * P.n_heads + h) * P.head_dim + d] = acc.x + acc.y;
}
