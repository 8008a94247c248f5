// Elementwise ops, one invocation per element; the entry point is chosen by name.
//   add:      A += B
//   swiglu:   O = silu(A) ⊙ B   (x / (1 + e^-x) with ggml_v_expf, as ggml_vec_swiglu_f32)
//   add_bias: A[t, :] += w      (w read through the composed quant section)

struct Params {
  n: u32,
  width: u32, // bias length (add_bias)
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read_write> A: array<f32>;
@group(0) @binding(3) var<storage, read_write> B: array<f32>;
@group(0) @binding(4) var<storage, read_write> O: array<f32>;

{{DECODE}}

fn gid(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
  return (wid.x + wid.y * nwg.x) * 64u + li;
}

@compute @workgroup_size(64)
fn add(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let i = gid(wid, nwg, li);
  if (i < P.n) {
    A[i] = A[i] + B[i];
  }
}

@compute @workgroup_size(64)
fn swiglu(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let i = gid(wid, nwg, li);
  if (i < P.n) {
    let g = A[i];
    O[i] = (g / (1.0 + expf_ggml(-g))) * B[i];
  }
}

@compute @workgroup_size(64)
fn add_bias(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let i = gid(wid, nwg, li);
  if (i < P.n) {
    A[i] = A[i] + w_elem(0u, i % P.width);
  }
}
