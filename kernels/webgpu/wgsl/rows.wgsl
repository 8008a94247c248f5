// Row copies and grouped row sums, for a mixture of experts:
//   copy:       D[dst_rows[i], :] = S[src_rows[i], :]  (· scales[i] in f32 when has_scale)
//   sum_groups: D[g, :] = ((S[g·k, :] + S[g·k + 1, :]) + …) + S[g·k + k − 1, :], in order
// The row indices (u32) and scales (f32 bits) come in I: src_rows at idx_off, dst_rows after
// them, scales after those.

struct Params {
  n: u32, // rows to copy (copy) or groups (sum_groups)
  cols: u32,
  idx_off: u32,
  has_scale: u32,
  k: u32, // rows per group (sum_groups)
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> I: array<u32>;
@group(0) @binding(2) var<storage, read_write> S: array<f32>;
@group(0) @binding(3) var<storage, read_write> D: array<f32>;

fn gid(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
  return (wid.x + wid.y * nwg.x) * 64u + li;
}

@compute @workgroup_size(64)
fn copy(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let e = gid(wid, nwg, li);
  if (e >= P.n * P.cols) {
    return;
  }
  let i = e / P.cols;
  let c = e % P.cols;
  let v = S[I[P.idx_off + i] * P.cols + c];
  let to = I[P.idx_off + P.n + i] * P.cols + c;
  if (P.has_scale != 0u) {
    D[to] = v * bitcast<f32>(I[P.idx_off + 2u * P.n + i]);
  } else {
    D[to] = v;
  }
}

@compute @workgroup_size(64)
fn sum_groups(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let e = gid(wid, nwg, li);
  if (e >= P.n * P.cols) {
    return;
  }
  let g = e / P.cols;
  let c = e % P.cols;
  var acc = S[g * P.k * P.cols + c];
  for (var r = 1u; r < P.k; r = r + 1u) {
    acc = acc + S[(g * P.k + r) * P.cols + c];
  }
  D[g * P.cols + c] = acc;
}
