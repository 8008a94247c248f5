// Causal softmax of attention score rows in place (ggml_soft_max_ext; the scale was applied by
// attention.wgsl): row (t, h) has pos0 + t + 1 live entries. One workgroup per row:
// p_j = e^(s_j − max) · (1 / Σ e^(s_k − max)).

struct Params {
  n_rows: u32, // rows · n_heads
  n_heads: u32,
  n_max: u32,
  pos0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> S: array<f32>;

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let r = wid.x + wid.y * nwg.x;
  let live = r < P.n_rows;
  let n = P.pos0 + r / P.n_heads + 1u;
  let base = r * P.n_max;
  var m = -3.4028235e38;
  if (live) {
    for (var j = li; j < n; j = j + 64u) {
      m = max(m, S[base + j]);
    }
  }
  red[li] = m;
  workgroupBarrier();
  for (var k = 32u; k > 0u; k = k / 2u) {
    if (li < k) {
      red[li] = max(red[li], red[li + k]);
    }
    workgroupBarrier();
  }
  let mx = red[0];
  workgroupBarrier();
  var s = 0.0;
  if (live) {
    for (var j = li; j < n; j = j + 64u) {
      let e = expf_ggml(S[base + j] - mx);
      S[base + j] = e;
      s = s + e;
    }
  }
  red[li] = s;
  workgroupBarrier();
  for (var k = 32u; k > 0u; k = k / 2u) {
    if (li < k) {
      red[li] = red[li] + red[li + k];
    }
    workgroupBarrier();
  }
  let inv = 1.0 / red[0];
  if (live) {
    for (var j = li; j < n; j = j + 64u) {
      S[base + j] = S[base + j] * inv;
    }
  }
}
