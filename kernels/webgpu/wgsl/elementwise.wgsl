// Elementwise ops, one invocation per element; the entry point is chosen by name.
//   add:      A += B
//   swiglu:   O = silu(A) ⊙ B   (x / (1 + e^-x) with ggml_v_expf, as ggml_vec_swiglu_f32)
//   add_bias: A[t, :] += w      (w read through the composed quant section)
//   scale:    A *= s
//   geglu:    O = gelu(A) ⊙ B   (GELU from ggml's f16 table, bound as W: ggml_vec_geglu_f32)

struct Params {
  n: u32,
  width: u32, // bias length (add_bias)
  s: f32, // factor (scale)
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

@compute @workgroup_size(64)
fn scale(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let i = gid(wid, nwg, li);
  if (i < P.n) {
    A[i] = A[i] * P.s;
  }
}

@compute @workgroup_size(64)
fn geglu(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let i = gid(wid, nwg, li);
  if (i < P.n) {
    let x = A[i];
    // ggml_vec_geglu_f32's order: a NaN reads the table (NaN), as on the CPU
    var y = 0.0;
    if (x <= -10.0) {
      y = 0.0;
    } else if (x >= 10.0) {
      y = x * B[i];
    } else {
      y = bitcast<f32>(W[f32_to_f16_bits(x)]) * B[i];
    }
    O[i] = y;
  }
}
