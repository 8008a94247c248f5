// Sampling candidates of logit rows, so a decode step reads back bytes instead of a vocabulary
// of floats. One workgroup per row r of S (n values, row_stride apart):
//   - the k largest values whose ids are not in the row's exclude list (ids of penalised tokens,
//     sorted ascending), largest first, ties to the lower id (the host sampler's order);
//   - the values of the excluded ids, in the list's order (the host applies the penalties to
//     them in double, as its own sampler does, and merges them in);
//   - the largest non-excluded value m and Σ e^(v − m) over the non-excluded values (an online
//     softmax sum per lane, lanes merged), for log-probabilities; m is NaN when a NaN is among
//     them (NaNs are otherwise skipped).
// Output row r at O[out_off + r · out_words]: k ids (0xffffffff when fewer values exist), k
// values (f32 bits), the excluded values, m, the sum. A multi-step greedy decode leaves each
// step's row in one device buffer, where the next step's embedding reads the id (embed.wgsl).
// Each lane keeps its own sorted top-KMAX of its strided share of the row, then k rounds pick
// the best lane head through workgroup memory, so the row is read once whatever k is.

struct Params {
  n: u32, // values per row
  k: u32, // candidates wanted, ≤ KMAX
  row_stride: u32, // floats from one row of S to the next
  data_off: u32, // u32 index in D of the (offset, count) pair of each row's exclude list
  out_words: u32, // output words per row
  n_rows: u32,
  out_off: u32, // u32 index in O of row 0's output
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> D: array<u32>;
@group(0) @binding(2) var<storage, read> S: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<u32>;

const WG: u32 = 64u;
const KMAX: u32 = {{KMAX}}u;
const MAX_EXCLUDE: u32 = 256u;
const NONE: u32 = 0xffffffffu;
//#if SUBGROUPS
const SG: u32 = {{SG}}u; // the adapter's smallest subgroup
//#endif

var<workgroup> ex: array<u32, MAX_EXCLUDE>;
var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;
var<workgroup> red_l: array<u32, WG>;
var<workgroup> red_s: array<vec2<f32>, WG>;
var<workgroup> nan_seen: atomic<u32>; // workgroup memory starts zeroed: one row per workgroup

// True when (va, ia) comes before (vb, ib): larger value first, then the lower id.
fn before(va: f32, ia: u32, vb: f32, ib: u32) -> bool {
  return va > vb || (va == vb && ia < ib);
}

// Whether lane candidate (vb, ib) replaces (va, ia): a real id that comes first.
fn takes(va: f32, ia: u32, vb: f32, ib: u32) -> bool {
  return ib != NONE && (ia == NONE || before(vb, ib, va, ia));
}

// Two lanes' (max, Σ e^(v − max)) as one, rescaled to the larger max.
fn merge_sum(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let mx = max(a.x, b.x);
  var sa = 0.0;
  var sb = 0.0;
  if (a.y > 0.0) {
    sa = a.y * exp(a.x - mx);
  }
  if (b.y > 0.0) {
    sb = b.y * exp(b.x - mx);
  }
  return vec2<f32>(mx, sa + sb);
}

// Binary search of the row's sorted exclude list (n_ex entries in `ex`).
fn excluded(id: u32, n_ex: u32) -> bool {
  var lo = 0u;
  var hi = n_ex;
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    if (ex[mid] < id) {
      lo = mid + 1u;
    } else {
      hi = mid;
    }
  }
  return lo < n_ex && ex[lo] == id;
}

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let r = wid.x + wid.y * nwg.x;
  // Uniform control flow for the barriers below: a workgroup past the last row still takes part
  // in them and writes nothing.
  let live = r < P.n_rows;
  let rr = min(r, P.n_rows - 1u);
  let ex_off = D[P.data_off + 2u * rr];
  let n_ex = min(D[P.data_off + 2u * rr + 1u], MAX_EXCLUDE);
  for (var j = li; j < n_ex; j = j + WG) {
    ex[j] = D[ex_off + j];
  }
  workgroupBarrier();
  let base = rr * P.row_stride;
  let obase = P.out_off + rr * P.out_words;

  // This lane's share: its own top list (sorted, `len` entries) and online (max, Σ e^(v − max)).
  var tv: array<f32, KMAX>;
  var ti: array<u32, KMAX>;
  var len = 0u;
  var m = -3.4028235e38;
  var s = 0.0;
  for (var i = li; i < P.n; i = i + WG) {
    if (n_ex > 0u && excluded(i, n_ex)) {
      continue;
    }
    let v = S[base + i];
    // A NaN (told by its bits: WGSL may assume floats are never NaN) takes no part; the row's
    // max is written as NaN instead, so the host refuses the row.
    if ((bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u) {
      atomicOr(&nan_seen, 1u);
      continue;
    }
    if (v > m) {
      s = s * exp(m - v) + 1.0;
      m = v;
    } else {
      s = s + exp(v - m);
    }
    // Ids arrive in increasing order, so an equal value never displaces an earlier one.
    if (len == P.k && !(v > tv[len - 1u])) {
      continue;
    }
    var j = min(len, P.k - 1u);
    if (len < P.k) {
      len = len + 1u;
    }
    while (j > 0u && tv[j - 1u] < v) {
      tv[j] = tv[j - 1u];
      ti[j] = ti[j - 1u];
      j = j - 1u;
    }
    tv[j] = v;
    ti[j] = i;
  }

  // Row max and sum: each lane's sum rescaled to the common max.
  //#if SUBGROUPS
  // Every reduction here takes the tree's order (lane l with lane l ^ h = l + h for the lanes
  // that count): steps as wide as a subgroup (SG) through workgroup memory, the rest through
  // shuffles, so lane 0 ends with the tree's values bit for bit.
  var ms = vec2<f32>(m, s);
  var h = WG / 2u;
  for (; h >= SG; h = h / 2u) {
    red_s[li] = ms;
    workgroupBarrier();
    ms = merge_sum(ms, red_s[li ^ h]);
    workgroupBarrier();
  }
  for (; h > 0u; h = h / 2u) {
    ms = merge_sum(ms, subgroupShuffleXor(ms, h));
  }
  if (li == 0u) {
    red_s[0] = ms;
  }
  workgroupBarrier();
  //#else
  red_s[li] = vec2<f32>(m, s);
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h = h / 2u) {
    if (li < h) {
      red_s[li] = merge_sum(red_s[li], red_s[li + h]);
    }
    workgroupBarrier();
  }
  //#endif

  // k rounds: the best head among the lanes wins and its lane moves to its next entry.
  var head = 0u;
  for (var rd = 0u; rd < P.k; rd = rd + 1u) {
    var cv = -3.4028235e38;
    var ci = NONE;
    if (head < len) {
      cv = tv[head];
      ci = ti[head];
    }
    //#if SUBGROUPS
    var cl = li;
    var g = WG / 2u;
    for (; g >= SG; g = g / 2u) {
      red_v[li] = cv;
      red_i[li] = ci;
      red_l[li] = cl;
      workgroupBarrier();
      let o = li ^ g;
      if (takes(cv, ci, red_v[o], red_i[o])) {
        cv = red_v[o];
        ci = red_i[o];
        cl = red_l[o];
      }
      workgroupBarrier();
    }
    for (; g > 0u; g = g / 2u) {
      let ov = subgroupShuffleXor(cv, g);
      let oi = subgroupShuffleXor(ci, g);
      let ol = subgroupShuffleXor(cl, g);
      if (takes(cv, ci, ov, oi)) {
        cv = ov;
        ci = oi;
        cl = ol;
      }
    }
    if (li == 0u) {
      red_v[0] = cv;
      red_i[0] = ci;
      red_l[0] = cl;
    }
    workgroupBarrier();
    //#else
    red_v[li] = cv;
    red_i[li] = ci;
    red_l[li] = li;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
      if (li < h) {
        let o = li + h;
        if (takes(red_v[li], red_i[li], red_v[o], red_i[o])) {
          red_v[li] = red_v[o];
          red_i[li] = red_i[o];
          red_l[li] = red_l[o];
        }
      }
      workgroupBarrier();
    }
    //#endif
    let win_i = red_i[0];
    let win_l = red_l[0];
    if (live && li == 0u) {
      O[obase + rd] = win_i;
      O[obase + P.k + rd] = bitcast<u32>(red_v[0]);
    }
    if (win_i != NONE && win_l == li) {
      head = head + 1u;
    }
    workgroupBarrier();
  }

  if (live) {
    for (var j = li; j < n_ex; j = j + WG) {
      O[obase + 2u * P.k + j] = bitcast<u32>(S[base + ex[j]]);
    }
    if (li == 0u) {
      O[obase + 2u * P.k + n_ex] = select(bitcast<u32>(red_s[0].x), 0x7fc00000u, atomicLoad(&nan_seen) != 0u);
      O[obase + 2u * P.k + n_ex + 1u] = bitcast<u32>(red_s[0].y);
    }
  }
}
