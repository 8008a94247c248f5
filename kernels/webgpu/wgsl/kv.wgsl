// Store k and v rows into one layer of the KV cache at positions pos0 ..; one invocation per
// cache word. f32 caches hold one element per word; f16 caches hold two halves per word (rows
// padded to an even element count), rounded to nearest even like ggml_cpu_fp32_to_fp16.

struct Params {
  rows: u32,
  kv_dim: u32,
  stride_w: u32, // words per cache row
  pos0: u32,
  row_off: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> K: array<f32>;
@group(0) @binding(2) var<storage, read_write> V: array<f32>;
@group(0) @binding(3) var<storage, read_write> KC: array<u32>;
@group(0) @binding(4) var<storage, read_write> VC: array<u32>;

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * 64u + li;
  if (i >= P.rows * P.stride_w) {
    return;
  }
  let t = i / P.stride_w;
  let w = i % P.stride_w;
  let dst = (P.pos0 + t) * P.stride_w + w;
  let src = (P.row_off + t) * P.kv_dim;
  //#if KV_F16
  let c = 2u * w;
  var k = f32_to_f16_bits(K[src + c]);
  var v = f32_to_f16_bits(V[src + c]);
  if (c + 1u < P.kv_dim) {
    k = k | (f32_to_f16_bits(K[src + c + 1u]) << 16u);
    v = v | (f32_to_f16_bits(V[src + c + 1u]) << 16u);
  }
  KC[dst] = k;
  VC[dst] = v;
  //#else
  KC[dst] = bitcast<u32>(K[src + w]);
  VC[dst] = bitcast<u32>(V[src + w]);
  //#endif
}
