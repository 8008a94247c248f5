// Embedding lookup (ggml_get_rows): out[t, c] = dequantized row ids[t] of the table, for the
// table rows held by this part [row0, row0 + n_rows). Token ids come from the per-batch data
// arena `D` at `ids_off`.

struct Params {
  n_tok: u32,
  cols: u32,
  row_bytes: u32,
  row0: u32,
  n_rows: u32,
  ids_off: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> D: array<u32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;

{{DECODE}}

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * 64u + li;
  if (i >= P.n_tok * P.cols) {
    return;
  }
  let t = i / P.cols;
  let c = i % P.cols;
  let id = D[P.ids_off + t];
  if (id < P.row0 || id >= P.row0 + P.n_rows) {
    return;
  }
  O[i] = w_elem((id - P.row0) * P.row_bytes, c);
}
