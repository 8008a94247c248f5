/**
 * The layouts weights take in WASM memory at upload, for the matmul kernels (assembly/index.ts),
 * and how one row is read back out of them (embedding lookups).
 *
 * - 32-element block types: full 4-row groups interleaved block by block (repack4); Q4_0 (and
 *   Q8_0 under the biased kernel) as byte quads instead (repackQuads: scales first, then quad k
 *   of row i at 8 + 16k + 4i); Q4_1, Q5_0 and Q5_1 as byte quads too, after the rows' scales,
 *   mins (Q4_1, Q5_1) and a vector of their 5th bits ordered by quad (Q5_0, Q5_1;
 *   repackNibbleQuads). Q8_0 under the biased kernel also has every quant byte stored
 *   + 128 (flipped), in its groups and in the rows after them: it is the relaxed dot's unsigned
 *   operand (assembly/index.ts, Q8G).
 * - Q4_K: full 4-row groups as byte quads, super-block by super-block (repackQ4K: the 4 rows'
 *   headers, then quant quad k of row r at 64 + 16k + 4r); rows after them as the file has them.
 * - Q2_K: full 4-row groups as byte quads (repackQ2K: per super-block the 4 rows' quants, quad k
 *   of row r at 16k + 4r, then their scale bytes transposed, then d and dmin); rows after them as
 *   the file has them.
 * - Q3_K: full 4-row groups as class quads (repackQ3K: per super-block the hmask and quant bytes
 *   of each class, the elements c, c + 8m of a 32-element span, as one byte quad of each row, then
 *   the 4 rows' scale words and d); rows after them as the file has them.
 * - Q5_K: full 4-row groups as class quads (repackQ5K: per super-block the 4 rows' headers, then
 *   the 5th bits and the nibbles of each class, the elements c, c + 8, c + 16, c + 24 of a
 *   sub-block, as one byte quad of each row); rows after them as the file has them.
 * - Q6_K: full 4-row groups as byte quads (repackQ6K: per super-block the 4 rows' quants, 3
 *   vectors per group of 16, the 6-bit quants re-packed so that each 16-byte vector unpacks to
 *   a quad of each row, and their header: scales, then d; super-blocks in pairs, both headers then
 *   both quants); rows after them as the file has them.
 * Everything else stays as the file has it.
 */
import { GGMLType, typeInfo } from "../quant/types.ts";
import { type Memories, unflipQ8, type WWeight } from "./resources.ts";

/** 32-element block types whose matrices the kernels read as interleaved 4-row groups. */
const REPACKED = new Set([
  GGMLType.Q4_0,
  GGMLType.Q4_1,
  GGMLType.Q5_0,
  GGMLType.Q5_1,
  GGMLType.Q8_0,
]);

/**
 * Whether a weight is laid out as byte quads rather than whole blocks side by side (repack4):
 * Q4_0, Q4_1, Q5_0 and Q5_1 always; Q8_0 under the biased kernel (`biasedQ8`: the weights' own bytes, + 128, are the
 * dot's unsigned operand). Over P/N planes Q8_0 stays with repack4: both planes need
 * broadcasting in the quad kernel (measured 25% slower).
 */
function quadLayout(type: GGMLType, biasedQ8: boolean): boolean {
  return type === GGMLType.Q4_0 || NIBBLE_QUADS.has(type) || (biasedQ8 && type === GGMLType.Q8_0);
}

/** The nibble types with a quad layout of their own (repackNibbleQuads: mins, 5th bits). */
const NIBBLE_QUADS = new Set([GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1]);

/**
 * Put a just-uploaded weight into the layout its matmul kernel reads (in place); `biasedQ8`: the
 * backend's Q8_0 kernel (WasmBackendOptions.biasedQ8).
 */
export function layOut(mem: Memories, w: WWeight, biasedQ8: boolean): void {
  const ar = mem.arenas[w.arena];
  // A one-row weight (a norm, a bias) also gets a float copy; it is still laid out for its
  // matmul below: the K-quant kernels read only their repacked layout, and a one-row Q4_K or
  // Q6_K matrix gave wrong numbers when its repack was skipped.
  if (w.nRows === 1) mem.floats(w);
  if (REPACKED.has(w.type)) {
    if (w.nRows >= 4) repack(mem, w, quadLayout(w.type, biasedQ8));
    if (biasedQ8 && w.type === GGMLType.Q8_0) {
      // the rows after the full groups, row-major (repackQuads flipped the groups')
      const first = w.repackedRows;
      ar.k.flipQ8(w.off + first * w.rowBytes, ((w.nRows - first) * w.rowBytes) / 34);
      w.q8Flipped = true;
    }
  } else if (K_LAYOUTS[w.type]) {
    if (w.nRows >= 4) repackK(mem, w);
  }
}

/**
 * Run `lay(tmp, groups)` over `w`'s full 4-row groups with 4 rows of scratch at `tmp` (freed
 * after); returns the number of groups.
 */
function inGroups(mem: Memories, w: WWeight, lay: (tmp: number, groups: number) => void): number {
  const ar = mem.arenas[w.arena];
  const groups = Math.floor(w.nRows / 4);
  const tmp = ar.alloc(4 * w.rowBytes);
  if (tmp === undefined) {
    throw new Error(
      `wasm backend: no room for ${4 * w.rowBytes} bytes of scratch to lay out ${w.name}`,
    );
  }
  try {
    lay(tmp, groups);
  } finally {
    ar.release(tmp, 4 * w.rowBytes);
  }
  return groups;
}

/** Interleave a 32-block weight's full 4-row groups for the matmul kernels (in place). */
function repack(mem: Memories, w: WWeight, quads: boolean): void {
  const k = mem.arenas[w.arena].k;
  const bb = typeInfo(w.type)!.typeSize;
  const groups = inGroups(mem, w, (tmp, groups) => {
    if (quads && NIBBLE_QUADS.has(w.type)) k.repackNibbleQuads(w.off, w.rowBytes, bb, groups, tmp);
    else if (quads) {
      k.repackQuads(w.off, w.rowBytes, bb, groups, tmp, w.type === GGMLType.Q8_0 ? 1 : 0);
    } else k.repack4(w.off, w.rowBytes, bb, groups, tmp);
  });
  w.bb = bb;
  w.quads = quads;
  w.repackedRows = groups * 4;
}

/** Lay out a K-quant weight's full 4-row groups as quads (in place). */
function repackK(mem: Memories, w: WWeight): void {
  const k = mem.arenas[w.arena].k;
  const repack = K_LAYOUTS[w.type]!.repack;
  const groups = inGroups(mem, w, (tmp, groups) => k[repack](w.off, w.rowBytes, groups, tmp));
  // bb: row views keep to whole groups (weightRows)
  w.bb = typeInfo(w.type)!.typeSize;
  w.kQuads = true;
  w.repackedRows = groups * 4;
}

/** Reused row buffer of {@link fileRow} for rows gathered out of a layout. */
let rowBuf = new Uint8Array(0);

function scratchRow(bytes: number): Uint8Array {
  if (rowBuf.length < bytes) rowBuf = new Uint8Array(bytes);
  return rowBuf;
}

/**
 * Row `id` of `w` in the file's layout: [bytes, offset] — the arena itself when the row is
 * stored as the file has it, else a reused buffer holding it gathered (valid until the next
 * call).
 */
export function fileRow(src: Uint8Array, w: WWeight, id: number): [Uint8Array, number] {
  let rowSrc = src;
  let rowOff = w.off + id * w.rowBytes;
  if (w.kQuads) {
    if (id >= w.repackedRows) return [src, rowOff];
    const out = scratchRow(w.rowBytes);
    const group = w.off + (id - (id & 3)) * w.rowBytes;
    K_LAYOUTS[w.type]!.row(src, group, id & 3, out, w.rowBytes / w.bb);
    return [out, 0];
  }
  if (w.bb && id < w.repackedRows) {
    // gather the row's blocks out of its interleaved group (see repack4)
    rowSrc = scratchRow(w.rowBytes);
    const group = w.off + (id - (id & 3)) * w.rowBytes;
    const i = id & 3;
    const bb = w.bb;
    for (let b = 0; b < w.rowBytes / bb; b++) {
      if (w.quads && NIBBLE_QUADS.has(w.type)) {
        nibbleQuadBlock(src, group + 4 * b * bb, i, rowSrc, b * bb, bb);
      } else if (w.quads) {
        const blk = group + 4 * b * bb;
        rowSrc.set(src.subarray(blk + 2 * i, blk + 2 * i + 2), b * bb);
        for (let k = 0; k < (bb - 2) / 4; k++) {
          const at = blk + 8 + 16 * k + 4 * i;
          rowSrc.set(src.subarray(at, at + 4), b * bb + 2 + 4 * k);
        }
      } else {
        const at = group + (4 * b + i) * bb;
        rowSrc.set(src.subarray(at, at + bb), b * bb);
      }
    }
    rowOff = 0;
  }
  if (w.q8Flipped) {
    if (rowSrc === src) {
      rowSrc = scratchRow(w.rowBytes);
      rowSrc.set(src.subarray(rowOff, rowOff + w.rowBytes));
      rowOff = 0;
    }
    unflipQ8(rowSrc.subarray(0, w.rowBytes));
  }
  return [rowSrc, rowOff];
}

/**
 * Block b of row r (0..3) of a Q4_1 (bb 20), Q5_0 (bb 22) or Q5_1 (bb 24) weight's 4-row group,
 * from its group block at `blk` (see repackNibbleQuads: the rows' d at 2r, Q4_1's and Q5_1's m at
 * 8 + 2r, then the 5-bit types' 5th-bit vector, row r's byte j holding in bit k (4 + k) the bit of
 * element 4k + j (16 + 4k + j), then nibble quad k of row r at 16k + 4r) into `out` at `at` in the
 * file's layout.
 */
function nibbleQuadBlock(
  src: Uint8Array,
  blk: number,
  r: number,
  out: Uint8Array,
  at: number,
  bb: number,
): void {
  const hdr = bb === 22 ? 2 : 4;
  const five = bb !== 20;
  const hv = blk + 4 * hdr;
  out[at] = src[blk + 2 * r];
  out[at + 1] = src[blk + 2 * r + 1];
  if (hdr === 4) {
    out[at + 2] = src[blk + 8 + 2 * r];
    out[at + 3] = src[blk + 9 + 2 * r];
  }
  if (five) {
    let qh = 0;
    for (let j = 0; j < 4; j++) {
      const v = src[hv + 4 * r + j];
      for (let k = 0; k < 4; k++) {
        qh |= ((v >> k) & 1) << (4 * k + j);
        qh |= ((v >> (4 + k)) & 1) << (16 + 4 * k + j);
      }
    }
    for (let j = 0; j < 4; j++) out[at + hdr + j] = (qh >>> (8 * j)) & 255;
  }
  const qv = hv + (five ? 16 : 0);
  const qs = at + hdr + (five ? 4 : 0);
  for (let k = 0; k < 4; k++) {
    const q = qv + 16 * k + 4 * r;
    out.set(src.subarray(q, q + 4), qs + 4 * k);
  }
}

/**
 * Row r (0..3) of a Q4_K weight's 4-row group at `group` (see repackQ4K) into `out` in the file's
 * layout: per super-block (576 bytes) its header at 16r, its quant quad k at 64 + 16k + 4r.
 */
function q4kRow(src: Uint8Array, group: number, r: number, out: Uint8Array, nb: number): void {
  for (let b = 0; b < nb; b++) {
    const blk = group + 576 * b;
    out.set(src.subarray(blk + 16 * r, blk + 16 * r + 16), 144 * b);
    for (let k = 0; k < 32; k++) {
      const at = blk + 64 + 16 * k + 4 * r;
      out.set(src.subarray(at, at + 4), 144 * b + 16 + 4 * k);
    }
  }
}

/**
 * Row r (0..3) of a Q5_K weight's 4-row group at `group` (see repackQ5K) into `out` in the file's layout: per
 * super-block
 * (704 bytes) the rows' headers at 16r, then qh vector c at 64 + 16c and nibble vector c of pair
 * p at 192 + 128p + 16c, row r's byte m of each at 4r + m holding qh[c + 8m] and
 * qs[32p + c + 8m].
 */
function q5kRow(src: Uint8Array, group: number, r: number, out: Uint8Array, nb: number): void {
  for (let b = 0; b < nb; b++) {
    const blk = group + 704 * b;
    const o = 176 * b;
    out.set(src.subarray(blk + 16 * r, blk + 16 * r + 16), o);
    for (let c = 0; c < 8; c++) {
      for (let m = 0; m < 4; m++) {
        const at = 16 * c + 4 * r + m;
        out[o + 16 + c + 8 * m] = src[blk + 64 + at];
        for (let p = 0; p < 4; p++) {
          out[o + 48 + 32 * p + c + 8 * m] = src[blk + 192 + 128 * p + at];
        }
      }
    }
  }
}

/**
 * Row r (0..3) of a Q2_K weight's 4-row group at `group` (see repackQ2K) into `out` in the file's layout: per
 * super-block
 * (336 bytes) quad k of row r at 16k + 4r (qs[4k..4k + 3]), scale byte g of row r at 256 + 4g + r,
 * d at 320 + 2r, dmin at 328 + 2r.
 */
function q2kRow(src: Uint8Array, group: number, r: number, out: Uint8Array, nb: number): void {
  for (let b = 0; b < nb; b++) {
    const blk = group + 336 * b;
    const o = 84 * b;
    for (let g = 0; g < 16; g++) out[o + g] = src[blk + 256 + 4 * g + r];
    for (let k = 0; k < 16; k++) {
      out.set(src.subarray(blk + 16 * k + 4 * r, blk + 16 * k + 4 * r + 4), o + 16 + 4 * k);
    }
    out[o + 80] = src[blk + 320 + 2 * r];
    out[o + 81] = src[blk + 321 + 2 * r];
    out[o + 82] = src[blk + 328 + 2 * r];
    out[o + 83] = src[blk + 329 + 2 * r];
  }
}

/**
 * Row r (0..3) of a Q3_K weight's 4-row group at `group` (see repackQ3K) into `out` in the file's layout: per
 * super-block
 * (440 bytes) hmask vector c at 16c and quant vectors at 128 + 128h + 16c, row r's byte m of each
 * at 4r + m holding hmask[c + 8m] and qs[32h + c + 8m]; then the rows' scale words at 384 + 4r,
 * 400 + 4r, 416 + 4r and d at 432 + 2r.
 */
function q3kRow(src: Uint8Array, group: number, r: number, out: Uint8Array, nb: number): void {
  for (let b = 0; b < nb; b++) {
    const blk = group + 440 * b;
    const o = 110 * b;
    for (let c = 0; c < 8; c++) {
      for (let m = 0; m < 4; m++) {
        const at = 16 * c + 4 * r + m;
        out[o + c + 8 * m] = src[blk + at];
        out[o + 32 + c + 8 * m] = src[blk + 128 + at];
        out[o + 64 + c + 8 * m] = src[blk + 256 + at];
      }
    }
    for (let j = 0; j < 3; j++) {
      out.set(src.subarray(blk + 384 + 16 * j + 4 * r, blk + 388 + 16 * j + 4 * r), o + 96 + 4 * j);
    }
    out[o + 108] = src[blk + 432 + 2 * r];
    out[o + 109] = src[blk + 433 + 2 * r];
  }
}

const Q6 = new Uint8Array(256);

/**
 * Row r (0..3) of a Q6_K weight's 4-row group at `group` (see repackQ6K) into `out` in the file's layout: per
 * super-block
 * b 768 bytes of quants (group g's vectors A, B, C at 48g, row r's byte j of each at 4r + j: A
 * holds quant 16g + j in its low 6 bits, B 16g + 4 + j, C 16g + 8 + j, and their top 2 bits
 * quant 16g + 12 + j's bits 0-1, 2-3, 4-5) and a 72-byte header (scale 2p + h of row r at
 * 8p + 2r + h, d at 64 + 2r); super-blocks in pairs, both headers then both quants, a last odd
 * one alone.
 */
function q6kRow(src: Uint8Array, group: number, r: number, out: Uint8Array, nb: number): void {
  for (let b = 0; b < nb; b++) {
    const pair = group + 1680 * (b >> 1);
    const hdr = pair + 72 * (b & 1);
    const blk = pair + ((b | 1) < nb ? 144 : 72) + 768 * (b & 1);
    for (let g = 0; g < 16; g++) {
      for (let j = 0; j < 4; j++) {
        const at = blk + 48 * g + 4 * r + j;
        const [A, B, C] = [src[at], src[at + 16], src[at + 32]];
        Q6[16 * g + j] = A & 63;
        Q6[16 * g + 4 + j] = B & 63;
        Q6[16 * g + 8 + j] = C & 63;
        Q6[16 * g + 12 + j] = (A >> 6) | ((B >> 6) << 2) | ((C >> 6) << 4);
      }
    }
    // block_q6_K: element 128h + 32k + l is ql[64h + 32(k & 1) + l], nibble k >> 1, and bits
    // 2k..2k+1 of qh[32h + l]
    const o = 210 * b;
    for (let h = 0; h < 2; h++) {
      for (let l = 0; l < 32; l++) {
        const e = 128 * h + l;
        const [q0, q1, q2, q3] = [Q6[e], Q6[e + 32], Q6[e + 64], Q6[e + 96]];
        out[o + 64 * h + l] = (q0 & 15) | ((q2 & 15) << 4);
        out[o + 64 * h + 32 + l] = (q1 & 15) | ((q3 & 15) << 4);
        out[o + 128 + 32 * h + l] = (q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) |
          ((q3 >> 4) << 6);
      }
    }
    for (let p = 0; p < 8; p++) {
      out[o + 192 + 2 * p] = src[hdr + 8 * p + 2 * r];
      out[o + 193 + 2 * p] = src[hdr + 8 * p + 2 * r + 1];
    }
    out[o + 208] = src[hdr + 64 + 2 * r];
    out[o + 209] = src[hdr + 65 + 2 * r];
  }
}

/**
 * The K-quants laid out in 4-row groups (repackK): the kernel that lays a matrix's groups out, and
 * how one row of a group is gathered back into the file's layout (`nb` super-blocks of row r of
 * the group at `group`, into `out`).
 */
const K_LAYOUTS: Partial<
  Record<GGMLType, {
    repack: "repackQ2K" | "repackQ3K" | "repackQ4K" | "repackQ5K" | "repackQ6K";
    row: (src: Uint8Array, group: number, r: number, out: Uint8Array, nb: number) => void;
  }>
> = {
  [GGMLType.Q2_K]: { repack: "repackQ2K", row: q2kRow },
  [GGMLType.Q3_K]: { repack: "repackQ3K", row: q3kRow },
  [GGMLType.Q4_K]: { repack: "repackQ4K", row: q4kRow },
  [GGMLType.Q5_K]: { repack: "repackQ5K", row: q5kRow },
  [GGMLType.Q6_K]: { repack: "repackQ6K", row: q6kRow },
};
