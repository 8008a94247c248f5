// out[t, row] = Σ_c W[row, c] · x[t, c] for one weight type (section of quant.wgsl composed in).
//
// A workgroup of 64 invocations handles 64 / tpr weight rows and TT activation rows: tpr lanes
// (a power of two, chosen per call from the row length) share one weight row and stride over its blocks, each lane keeping TT partial sums that are
// then reduced through workgroup memory. Activations arrive already converted to the weight's
// vec_dot type by quantize.wgsl (or as plain f32 for F32 weights), in this layout of `A`:
//   float kinds: f32 bits at t·k + c
//   Q8 kinds:    int8 quants packed 4 per u32 at t·k/4 + c/4; block scales (f32) at
//                a_d_off + t·nb + b; Q8_1 sums (f32) / Q8_K 16-element sums (i32) at a_s_off + …

struct Params {
  n_rows: u32, // weight rows in this part
  k: u32, // row length (elements)
  n_tok: u32, // activation rows
  row_bytes: u32,
  out_stride: u32, // total weight rows (row length of out)
  out_off: u32, // first row of this part
  a_d_off: u32,
  a_s_off: u32,
  tpr: u32, // lanes per weight row: 1, 2, 4, …, 64
  w_skip: u32, // rows of W before this part's first row (a row view of a fused weight)
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read_write> A: array<u32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
//#if F16_NATIVE
@group(0) @binding(4) var<storage, read> WH: array<f16>; // W again, for quant.wgsl's ldh
//#endif

const WG: u32 = 64u;
const TT: u32 = {{TT}}u;
//#if SUBGROUPS
const SG: u32 = {{SG}}u; // the adapter's smallest subgroup
//#endif

fn a_f(t: u32, c: u32) -> f32 {
  return bitcast<f32>(A[t * P.k + c]);
}
fn a_q4(t: u32, w: u32) -> u32 {
  return A[t * (P.k / 4u) + w];
}
fn a_d(t: u32, b: u32) -> f32 {
  return bitcast<f32>(A[P.a_d_off + t * (P.k / BLOCK_ELEMS) + b]);
}
fn a_s(t: u32, b: u32) -> f32 {
  return bitcast<f32>(A[P.a_s_off + t * (P.k / BLOCK_ELEMS) + b]);
}
fn a_bsum(t: u32, g: u32) -> i32 {
  return bitcast<i32>(A[P.a_s_off + t * (P.k / 16u) + g]);
}

{{DECODE}}

//#if SINGLE_LANE
//#else
var<workgroup> red: array<f32, 512>; // WG · TT (TT ≤ 8)
//#endif

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let tpr = P.tpr;
  let row = (wid.x + wid.y * nwg.x) * (WG / tpr) + li / tpr;
  let lane = li % tpr;
  let t0 = wid.z * TT;
  var acc: array<Acc, TT>;
  for (var j = 0u; j < TT; j = j + 1u) {
    acc[j] = acc_zero();
  }
  if (row < P.n_rows) {
    let nb = P.k / BLOCK_ELEMS;
    let rbase = (row + P.w_skip) * P.row_bytes;
    let nt = min(TT, P.n_tok - t0);
    for (var b = lane; b < nb; b = b + tpr) {
      let wbase = rbase + b * BLOCK_BYTES;
      for (var j = 0u; j < nt; j = j + 1u) {
        acc[j] = acc_add(acc[j], wbase, t0 + j, b);
      }
    }
  }
  //#if SINGLE_LANE
  // tpr == 1: each invocation owns a row, accumulating its blocks in ggml's order (so results
  // match ggml's scalar kernels bit for bit); no workgroup memory, no barriers (much cheaper on
  // software adapters, where a barrier switches every invocation's coroutine).
  if (row < P.n_rows) {
    for (var j = 0u; j < TT; j = j + 1u) {
      let t = t0 + j;
      if (t < P.n_tok) {
        O[t * P.out_stride + P.out_off + row] = acc_final(acc[j]);
      }
    }
  }
  //#else
  //#if SUBGROUPS
  // Lane l adds lane l ^ s (= l + s for the lanes that count) at every step, as the tree below
  // adds red[l + s]: lane 0 ends with the same sum, bit for bit. Steps as wide as a subgroup
  // (SG, the adapter's smallest) go through workgroup memory, narrower ones through shuffles.
  var v: array<f32, TT>;
  for (var j = 0u; j < TT; j = j + 1u) {
    v[j] = acc_final(acc[j]);
  }
  var s = tpr / 2u;
  for (; s >= SG; s = s / 2u) {
    for (var j = 0u; j < TT; j = j + 1u) {
      red[li * TT + j] = v[j];
    }
    workgroupBarrier();
    for (var j = 0u; j < TT; j = j + 1u) {
      v[j] = v[j] + red[(li ^ s) * TT + j];
    }
    workgroupBarrier();
  }
  for (; s > 0u; s = s / 2u) {
    for (var j = 0u; j < TT; j = j + 1u) {
      v[j] = v[j] + subgroupShuffleXor(v[j], s);
    }
  }
  if (lane == 0u && row < P.n_rows) {
    for (var j = 0u; j < TT; j = j + 1u) {
      let t = t0 + j;
      if (t < P.n_tok) {
        O[t * P.out_stride + P.out_off + row] = v[j];
      }
    }
  }
  //#else
  for (var j = 0u; j < TT; j = j + 1u) {
    red[li * TT + j] = acc_final(acc[j]);
  }
  workgroupBarrier();
  for (var s = tpr / 2u; s > 0u; s = s / 2u) {
    if (lane < s) {
      for (var j = 0u; j < TT; j = j + 1u) {
        red[li * TT + j] = red[li * TT + j] + red[(li + s) * TT + j];
      }
    }
    workgroupBarrier();
  }
  if (lane == 0u && row < P.n_rows) {
    for (var j = 0u; j < TT; j = j + 1u) {
      let t = t0 + j;
      if (t < P.n_tok) {
        O[t * P.out_stride + P.out_off + row] = red[li * TT + j];
      }
    }
  }
  //#endif
  //#endif
}
