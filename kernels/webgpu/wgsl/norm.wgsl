// RMSNorm: out[t, :] = (x[t, :] · 1/sqrt(mean(x[t, :]²) + eps)) ⊙ w, one workgroup per row
// (ggml_rms_norm followed by ggml_mul). The weight is read through the composed quant section.

struct Params {
  n: u32,
  rows: u32,
  eps: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read_write> X: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;

{{DECODE}}

var<workgroup> red: array<vec2<f32>, 64>;
//#if SUBGROUPS
const SG: u32 = {{SG}}u;
//#endif

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let t = wid.x + wid.y * nwg.x;
  let base = t * P.n;
  // ggml sums the f32 squares in double; a compensated f32 sum rounds to the same value (a
  // plain f32 tree sum can be an ulp off, which flips Q8_0 steps of the next matmul's input).
  var s = vec2<f32>(0.0, 0.0);
  if (t < P.rows) {
    for (var i = li; i < P.n; i = i + 64u) {
      let v = X[base + i];
      s = ksum(s, v * v);
    }
  }
  //#if SUBGROUPS
  // The tree below, lane l combining itself with lane l ^ k (= l + k for the lanes that count),
  // so lane 0's sum is the tree's bit for bit: steps as wide as a subgroup (SG, the adapter's
  // smallest) through workgroup memory, narrower ones through shuffles.
  var k = 32u;
  for (; k >= SG; k = k / 2u) {
    red[li] = s;
    workgroupBarrier();
    s = ksum2(s, red[li ^ k]);
    workgroupBarrier();
  }
  for (; k > 0u; k = k / 2u) {
    s = ksum2(s, subgroupShuffleXor(s, k));
  }
  if (li == 0u) {
    red[0] = s;
  }
  workgroupBarrier();
  //#else
  red[li] = s;
  workgroupBarrier();
  for (var k = 32u; k > 0u; k = k / 2u) {
    if (li < k) {
      red[li] = ksum2(red[li], red[li + k]);
    }
    workgroupBarrier();
  }
  //#endif
  if (t >= P.rows) {
    return;
  }
  // ggml: mean = (float)(sum / n) from a double sum, then 1.0f / sqrtf(mean + eps)
  let hi = red[0].x + red[0].y;
  let lo = (red[0].x - hi) + red[0].y;
  let scale = 1.0 / sqrt(div_pair(hi, lo, P.n) + P.eps);
  for (var i = li; i < P.n; i = i + 64u) {
    O[base + i] = (X[base + i] * scale) * w_elem(0u, i);
  }
}
