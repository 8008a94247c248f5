// attention.wgsl's `scores` and `pv` for an f32 cache, shaped for adapters that run shaders on the
// CPU (Mesa's llvmpipe, where every storage load is a per-invocation loop of scalar loads): q, k
// and v are read 16 bytes at a time, and `pv` computes four output dimensions per invocation so
// each probability is read once for them. Every sum is attention.wgsl's, term by term in the same
// order (compensated over the head dimension, then over the cells), so the results are its bits.
// Needs head_dim and the cache row stride to be multiples of 4.

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
@group(0) @binding(1) var<storage, read_write> Q: array<vec4<f32>>; // q (scores) or out (pv)
@group(0) @binding(2) var<storage, read> C: array<vec4<f32>>; // K (scores) or V (pv) cache
@group(0) @binding(3) var<storage, read_write> S: array<f32>;

@compute @workgroup_size(64)
fn scores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let j = wid.x * 64u + li;
  let h = wid.y;
  let t = wid.z;
  if (j > P.pos0 + t || j < first_cell(t)) {
    return;
  }
  let kvh = h / (P.n_heads / P.n_kv_heads);
  let qb = ((P.row_off + t) * P.n_heads + h) * P.head_dim / 4u;
  let kb = (j * P.stride_w + kvh * P.head_dim) / 4u;
  var s = vec2<f32>(0.0, 0.0);
  for (var d = 0u; d < P.head_dim / 4u; d = d + 1u) {
    let p = Q[qb + d] * C[kb + d];
    s = ksum(ksum(ksum(ksum(s, p.x), p.y), p.z), p.w);
  }
  S[(t * P.n_heads + h) * P.n_max + j] = (s.x + s.y) * P.scale;
}

@compute @workgroup_size(16)
fn pv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let d4 = wid.x * 16u + li; // output dimensions 4·d4 … 4·d4 + 3
  let h = wid.y;
  let t = wid.z;
  if (d4 >= P.head_dim / 4u) {
    return;
  }
  let kvh = h / (P.n_heads / P.n_kv_heads);
  let sb = (t * P.n_heads + h) * P.n_max;
  let vb = kvh * P.head_dim / 4u + d4;
  let sw = P.stride_w / 4u;
  let n = P.pos0 + t + 1u;
  var a0 = vec2<f32>(0.0, 0.0);
  var a1 = vec2<f32>(0.0, 0.0);
  var a2 = vec2<f32>(0.0, 0.0);
  var a3 = vec2<f32>(0.0, 0.0);
  // masked cells have probability 0: adding their zeros would change nothing
  for (var j = first_cell(t); j < n; j = j + 1u) {
    let p = S[sb + j] * C[j * sw + vb];
    a0 = ksum(a0, p.x);
    a1 = ksum(a1, p.y);
    a2 = ksum(a2, p.z);
    a3 = ksum(a3, p.w);
  }
  Q[((P.row_off + t) * P.n_heads + h) * P.head_dim / 4u + d4] = vec4<f32>(
    a0.x + a0.y,
    a1.x + a1.y,
    a2.x + a2.y,
    a3.x + a3.y,
  );
}
