// Rotary position embedding in place (ggml_rope_ext, ext_factor 0). The host computes each
// row's (cos θ_i, sin θ_i) exactly as ggml_rope_cache_init does (θ iterated in f32, glibc's
// cosf/sinf, times attn_factor: kernels/rope_angles.ts) and passes them in the data arena `D` at
// `cs_off`: [t][i] → (cos, sin) for i < rope_dim / 2. One invocation per rotated pair.

struct Params {
  n_tok: u32,
  n_heads: u32,
  head_dim: u32,
  rope_dim: u32,
  neox: u32,
  cs_off: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> D: array<u32>;
@group(0) @binding(2) var<storage, read_write> X: array<f32>;

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let half = P.rope_dim / 2u;
  let g = (wid.x + wid.y * nwg.x) * 64u + li;
  if (g >= P.n_tok * P.n_heads * half) {
    return;
  }
  let i = g % half;
  let h = (g / half) % P.n_heads;
  let t = g / (half * P.n_heads);
  let c = bitcast<f32>(D[P.cs_off + (t * half + i) * 2u]);
  let s = bitcast<f32>(D[P.cs_off + (t * half + i) * 2u + 1u]);
  let base = (t * P.n_heads + h) * P.head_dim;
  var i0 = base + 2u * i;
  var i1 = i0 + 1u;
  if (P.neox != 0u) {
    i0 = base + i;
    i1 = i0 + half;
  }
  let x0 = X[i0];
  let x1 = X[i1];
  X[i0] = x0 * c - x1 * s;
  X[i1] = x0 * s + x1 * c;
}
