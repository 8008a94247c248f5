// The prompt (rows > 1) form of matmul.wgsl: the same sums, in the same order per lane, but the
// TT activation rows a workgroup multiplies are staged tile by tile (KT elements of each row,
// already in the vec_dot type) into workgroup memory, so the 64 / tpr weight rows of the
// workgroup read them from there instead of each fetching them from the storage buffer; each
// weight block is loaded once for all TT rows. Params, bindings and the layout of A are
// matmul.wgsl's; tpr ≤ blocks per tile, so lane `lane` still takes blocks lane, lane + tpr, …
// in increasing order. Used for float kinds, Q8_0 and Q8_1 (K-quants keep matmul.wgsl: llvmpipe
// took 33-104 s to compile their tiled form).

struct Params {
  n_rows: u32,
  k: u32,
  n_tok: u32,
  row_bytes: u32,
  out_stride: u32,
  out_off: u32,
  a_d_off: u32,
  a_s_off: u32,
  tpr: u32,
  w_skip: u32,
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
// Elements of each activation row per tile (a multiple of every block size it is used with).
const KT: u32 = {{KT}}u;

//#if KIND_F
// float kinds: one f32 per element
var<workgroup> tq: array<u32, TT * KT>;
//#else
// int8 quants, 4 per word; block scales; Q8_1 block sums or Q8_K 16-element sums
var<workgroup> tq: array<u32, TT * KT / 4u>;
var<workgroup> td: array<f32, TT * KT / 32u>;
var<workgroup> ts: array<u32, TT * KT / 16u>;
//#endif

// First activation row of this workgroup and first element of the current tile.
var<private> t0: u32;
var<private> e0: u32;

//#if KIND_F
fn a_f(t: u32, c: u32) -> f32 {
  return bitcast<f32>(tq[(t - t0) * KT + (c - e0)]);
}
//#else
fn a_q4(t: u32, w: u32) -> u32 {
  return tq[(t - t0) * (KT / 4u) + (w - e0 / 4u)];
}
fn a_d(t: u32, b: u32) -> f32 {
  return td[(t - t0) * (KT / BLOCK_ELEMS) + (b - e0 / BLOCK_ELEMS)];
}
fn a_s(t: u32, b: u32) -> f32 {
  return bitcast<f32>(ts[(t - t0) * (KT / BLOCK_ELEMS) + (b - e0 / BLOCK_ELEMS)]);
}
fn a_bsum(t: u32, g: u32) -> i32 {
  return bitcast<i32>(ts[(t - t0) * (KT / 16u) + (g - e0 / 16u)]);
}
//#endif

{{DECODE}}

//#if SINGLE_LANE
//#else
var<workgroup> red: array<f32, 512>; // WG · TT (TT ≤ 8)
//#endif

// Stage elements [e0, e0 + kt) of activation rows t0 .. t0 + nt − 1 into the tile.
fn load_tile(li: u32, nt: u32, kt: u32) {
  //#if KIND_F
  for (var i = li; i < TT * KT; i = i + WG) {
    let j = i / KT;
    let c = i % KT;
    if (j < nt && c < kt) {
      tq[i] = A[(t0 + j) * P.k + e0 + c];
    }
  }
  //#else
  let nb = P.k / BLOCK_ELEMS;
  for (var i = li; i < TT * (KT / 4u); i = i + WG) {
    let j = i / (KT / 4u);
    let w = i % (KT / 4u);
    if (j < nt && w < kt / 4u) {
      tq[i] = A[(t0 + j) * (P.k / 4u) + e0 / 4u + w];
    }
  }
  let bt = KT / BLOCK_ELEMS;
  for (var i = li; i < TT * bt; i = i + WG) {
    let j = i / bt;
    let b = i % bt;
    if (j < nt && b < kt / BLOCK_ELEMS) {
      td[i] = bitcast<f32>(A[P.a_d_off + (t0 + j) * nb + e0 / BLOCK_ELEMS + b]);
      //#if KIND_Q8_1
      ts[i] = A[P.a_s_off + (t0 + j) * nb + e0 / BLOCK_ELEMS + b];
      //#endif
    }
  }
  //#if KIND_Q8_K
  for (var i = li; i < TT * (KT / 16u); i = i + WG) {
    let j = i / (KT / 16u);
    let g = i % (KT / 16u);
    if (j < nt && g < kt / 16u) {
      ts[i] = A[P.a_s_off + (t0 + j) * (P.k / 16u) + e0 / 16u + g];
    }
  }
  //#endif
  //#endif
}

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let tpr = P.tpr;
  let row = (wid.x + wid.y * nwg.x) * (WG / tpr) + li / tpr;
  let lane = li % tpr;
  t0 = wid.z * TT;
  let nt = min(TT, P.n_tok - t0);
  var acc: array<Acc, TT>;
  for (var j = 0u; j < TT; j = j + 1u) {
    acc[j] = acc_zero();
  }
  let rbase = (row + P.w_skip) * P.row_bytes;
  for (var e = 0u; e < P.k; e = e + KT) {
    e0 = e;
    let kt = min(KT, P.k - e);
    load_tile(li, nt, kt);
    workgroupBarrier();
    if (row < P.n_rows) {
      let b_end = (e + kt) / BLOCK_ELEMS;
      for (var b = e / BLOCK_ELEMS + lane; b < b_end; b = b + tpr) {
        let wbase = rbase + b * BLOCK_BYTES;
        for (var j = 0u; j < nt; j = j + 1u) {
          acc[j] = acc_add(acc[j], wbase, t0 + j, b);
        }
      }
    }
    workgroupBarrier();
  }
  //#if SINGLE_LANE
  if (row < P.n_rows) {
    for (var j = 0u; j < nt; j = j + 1u) {
      O[(t0 + j) * P.out_stride + P.out_off + row] = acc_final(acc[j]);
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
    for (var j = 0u; j < nt; j = j + 1u) {
      O[(t0 + j) * P.out_stride + P.out_off + row] = red[li * TT + j];
    }
  }
  //#endif
}
