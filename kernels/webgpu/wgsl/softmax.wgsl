// Causal softmax of attention score rows in place (ggml_soft_max_ext; the scale was applied by
// attention.wgsl): row (t, h) has pos0 + t + 1 entries, of which the ones before `first` are masked by a
// sliding window (probability 0, in their lanes as ggml keeps them). One workgroup per row:
// p_j = e^(s_j − max) · (1 / Σ e^(s_k − max)), summed the way ggml's x86 build sums.

struct Params {
  n_rows: u32, // rows · n_heads
  n_heads: u32,
  n_max: u32,
  pos0: u32,
  window: u32, // sliding window, 0 for none
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> S: array<f32>;

var<workgroup> red: array<f32, 64>;
var<workgroup> red2: array<vec2<f32>, 64>;

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
  var first = 0u;
  if (P.window != 0u && n > P.window) {
    first = n - P.window;
  }
  var m = -3.4028235e38;
  if (live) {
    for (var j = first + li; j < n; j = j + 64u) {
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
  // ggml_vec_soft_max_f32 (SSE2): exponentials four lanes at a time, each group summed as
  // (e0 + e1) + (e2 + e3) in f32 and the groups in double (here: compensated f32).
  var s = vec2<f32>(0.0, 0.0);
  if (live) {
    for (var g = li * 4u; g < n; g = g + 256u) {
      var e = vec4<f32>(0.0, 0.0, 0.0, 0.0);
      for (var l = 0u; l < 4u; l = l + 1u) {
        if (g + l < n && g + l >= first) {
          e[l] = expf_ggml(S[base + g + l] - mx);
          S[base + g + l] = e[l];
        } else if (g + l < first) {
          S[base + g + l] = 0.0;
        }
      }
      s = ksum(s, (e.x + e.y) + (e.z + e.w));
    }
  }
  red2[li] = s;
  workgroupBarrier();
  for (var k = 32u; k > 0u; k = k / 2u) {
    if (li < k) {
      red2[li] = ksum2(red2[li], red2[li + k]);
    }
    workgroupBarrier();
  }
  // 1 / sum, rounded once from the compensated sum (the sum is ≥ 1: the row's maximum gives e^0).
  let hi = red2[0].x + red2[0].y;
  let lo = (red2[0].x - hi) + red2[0].y;
  let inv = recip_pair(hi, lo);
  if (live) {
    for (var g = li * 4u; g < n; g = g + 256u) {
      for (var l = 0u; l < 4u && g + l < n; l = l + 1u) {
        S[base + g + l] = S[base + g + l] * inv;
      }
    }
  }
}
