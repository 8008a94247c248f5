/**
 * WASM matmul jobs: converting the activations once per (buffer version, vec_dot type) into
 * the forms the weight's kernel reads, and splitting the weight rows of one or several weights
 * over the threads as one job.
 *
 * Numerics: the conversion (Q8_0/Q8_1/Q8_K quantization, f16/bf16 rounding) and the kernels'
 * integer dot products with their float scaling replay ggml's generic C code, so quantized
 * matmuls are bit-identical to the reference backend.
 */
import type { Buf, Weight } from "../backend.ts";
import { vecDotType } from "../quant/ops.ts";
import { GGMLType, typeInfo, typeName } from "../quant/types.ts";
import {
  A,
  ARENA,
  ARGS,
  KIND_Q8_0_BIASED,
  MAX_PARTS,
  OP,
  OP_MM32,
  OP_MMF,
  OP_MMK,
  PART_INTS,
} from "./jobs.ts";
import type { Kernels } from "./kernels.ts";
import type { Pool } from "./pool.ts";
import { align, type Memories, need, type WBuf, wbuf, type WWeight, wweight } from "./resources.ts";

/** vec_dot family of a weight type: how the activations are converted. */
const enum Act {
  F32 = 0,
  F16 = 1,
  BF16 = 2,
  Q8_0 = 3,
  Q8_1 = 4,
  Q8_K = 5,
}

/** The activation kernel for a weight type: its ggml vec_dot type (kernels/quant owns the map). */
function actKind(t: GGMLType): Act {
  switch (typeInfo(t)?.weight ? vecDotType(t) : undefined) {
    case GGMLType.F32:
      return Act.F32;
    case GGMLType.F16:
      return Act.F16;
    case GGMLType.BF16:
      return Act.BF16;
    case GGMLType.Q8_0:
      return Act.Q8_0;
    case GGMLType.Q8_1:
      return Act.Q8_1;
    case GGMLType.Q8_K:
      return Act.Q8_K;
  }
  throw new Error(`wasm backend: no matmul for tensor type ${typeName(t)}`);
}

/** Whether w can share a job with `first` (same kernel, input width and memory). */
function sameJob(first: WWeight, w: WWeight): boolean {
  return w.type === first.type && w.rowLen === first.rowLen && w.arena === first.arena &&
    w.rowBytes === first.rowBytes;
}

/**
 * Whether this engine's relaxed dot reads a second operand above 127 as an unsigned byte and sums
 * without saturating, which the biased Q8_0 kernel (mmQ8_0b) needs: V8 on x86 with AVX-VNNI
 * (vpdpbusd). Engines may instead read it as signed (Arm's sdot; V8 on x86 with AVX-VNNI-INT8,
 * vpdpbssd) or saturate the i16 pair sums (x86 without VNNI: pmaddubsw); each answers one of
 * these probes differently. Both V8 tiers and every worker emit the same instruction for the
 * process's CPU features, so one probe at start holds for the backend's life.
 */
export function dotReadsUnsigned(k: Kernels): boolean {
  return k.relaxedDot(-127, 255) === -4 * 127 * 255 && k.relaxedDot(127, 255) === 4 * 127 * 255 &&
    k.relaxedDot(-128, 128) === -4 * 128 * 128;
}

/**
 * The activation rows the biased Q8_0 and the Q4_0 kernels read in groups of 4 (Q8G):
 * groupedRows in assembly/index.ts (8-row tiles, the last padded from 6 rows, and 4 more where 3
 * to 5 rows are left after a tile).
 */
function groupedRows(rows: number): number {
  const tiled = tiledRows(rows);
  return tiled >= 8 && rows - tiled >= 3 ? tiled + 4 : tiled;
}

/**
 * The activation rows the Q4_K kernel reads in groups of 4 (q4kRows in assembly/index.ts): its
 * 8-row tiles, the last padded from 5 rows, and a 4-row tile where 3 or 4 rows are left.
 */
function q4kRows(rows: number): number {
  const tiled = (rows & 7) >= 5 ? (rows + 7) & ~7 : rows & ~7;
  return rows - tiled >= 3 ? tiled + 4 : tiled;
}

/** The activation rows in 8-row tiles, the last padded from 6 rows (tiledRows in assembly/index.ts). */
function tiledRows(rows: number): number {
  return (rows & 7) >= 6 ? (rows + 7) & ~7 : rows & ~7;
}

/** Weight types whose kernels take 8-row tiles over the activation's groups of 4 rows. */
const NIBBLE_TILES = new Set([GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1]);

/** Runs matmuls of one backend on its memories and pool. */
export class Matmuls {
  constructor(
    readonly mem: Memories,
    readonly pool: Pool,
    /** Threads started (scratch is sized for all). */
    readonly threads: number,
    /** Threads the ops use now (setThreads). */
    readonly active: () => number,
    /** Q8_0 weights run the biased kernel (mmQ8_0b: dotReadsUnsigned) rather than P/N planes. */
    readonly biasedQ8 = false,
  ) {}

  /** out = x · Wᵀ for `rows` rows of x. */
  matmul(wt: Weight, x: Buf, out: Buf, rows: number): void {
    const w = wweight(wt);
    const X = wbuf(x);
    const O = wbuf(out);
    need(X, rows * w.rowLen, "matmul x");
    need(O, rows * w.nRows, "matmul out");
    if (rows <= 0) return;
    this.#job([w], X, [O], rows);
  }

  /** matmul for each (weight, output) pair over one input: jobs of up to MAX_PARTS weights. */
  matmulMany(wts: Weight[], x: Buf, outs: Buf[], rows: number): void {
    if (wts.length !== outs.length) {
      throw new Error(`matmulMany: ${wts.length} weights but ${outs.length} outputs`);
    }
    const X = wbuf(x);
    const ws = wts.map(wweight);
    const Os = outs.map(wbuf);
    for (let i = 0; i < ws.length; i++) {
      need(X, rows * ws[i].rowLen, "matmul x");
      need(Os[i], rows * ws[i].nRows, "matmul out");
      if (Os[i].id === X.id) throw new Error("matmulMany: an output is the input");
    }
    if (rows <= 0) return;
    for (let i = 0; i < ws.length;) {
      let j = i + 1;
      while (j < ws.length && j - i < MAX_PARTS && sameJob(ws[i], ws[j])) j++;
      this.#job(ws.slice(i, j), X, Os.slice(i, j), rows);
      i = j;
    }
  }

  /** Several weights × the same input in one job (MAX_PARTS at most, checked by the caller). */
  #job(ws: WWeight[], X: WBuf, Os: WBuf[], rows: number): void {
    const { mem, pool } = this;
    const ctrl = pool.ctrl;
    const a0 = mem.a0;
    const w = ws[0];
    const n = w.rowLen;
    const kind = actKind(w.type);
    const st = mem.states[w.arena];
    const ar = st.arena;
    const k = ar.k;
    // activation layout in st.act
    const isK = kind === Act.Q8_K;
    const blk = isK ? 256 : 32;
    const nb = n / blk;
    const floatsAct = kind <= Act.BF16;
    const qsBytes = floatsAct ? align(rows * n * 4) : align(rows * n);
    const dBytes = floatsAct ? 0 : align(rows * nb * 4);
    const sBytes = floatsAct ? 0 : isK ? align(rows * nb * 64) : align(rows * nb * 4);
    // Q8_0 weights: the activation's P/N planes, or for the biased kernel the rows of its tiles
    // in groups of 4 (Q8G, groupedRows), after its sums; Q4_0, Q4_1, Q5_0 and Q5_1 weights read
    // the same groups on every engine (their nibbles are the relaxed dot's 7-bit operand)
    const q8w = kind === Act.Q8_0 && w.type === GGMLType.Q8_0;
    const groups = (q8w && this.biasedQ8) || NIBBLE_TILES.has(w.type);
    const pnForm = groups ? 2 : q8w ? 1 : 0;
    const pnBytes = groups
      ? align((groupedRows(rows) / 4) * nb * 160)
      : q8w
      ? align(rows * n * 2)
      : 0;
    // Q8_K activations also keep the Q4_K kernel's form (after their sums): its tiles' rows in groups
    // of 4 (1104 bytes per group and super-block, q4kRows) and every row's 32-element sums
    // (i16), made when a Q4_K weight first reads them
    const q4kBytes = isK ? align((q4kRows(rows) / 4) * nb * 1104) + align(rows * nb * 16) : 0;
    // … and the Q6_K (and Q2_K) kernel's: every row's 16-element sums as i16 (after those)
    const q6kBytes = isK ? align(rows * nb * 32) : 0;
    // … and the Q5_K kernel's: the quants class-major and every row's 32-element sums as i16
    // (permuteQ5KAct)
    const q5kBytes = isK ? align(rows * n) + align(rows * nb * 16) : 0;
    // … and the Q3_K kernel's: the quants class-major and their corrections (permuteQ3KAct)
    const q3kBytes = isK ? 2 * align(rows * n) : 0;
    if (
      st.actBuf !== X.id || st.actVersion !== X.version || st.actKind !== kind ||
      st.actRows !== rows || st.actN !== n || (pnForm && st.actPN !== pnForm)
    ) {
      st.actBuf = -1;
      const actOff = st.act.ensure(
        qsBytes + dBytes + sBytes + pnBytes + q4kBytes + q6kBytes + q5kBytes + q3kBytes,
      );
      st.actQ4K = false;
      st.actQ6K = false;
      st.actQ5K = false;
      st.actQ3K = false;
      let src = X.off;
      if (w.arena !== 0) {
        src = st.xin.ensure(rows * n * 4);
        ar.u8.set(a0.u8.subarray(X.off, X.off + rows * n * 4), src);
      }
      const d = actOff + qsBytes;
      const s = d + dBytes;
      if (kind === Act.F32) ar.u8.copyWithin(actOff, src, src + rows * n * 4);
      else if (kind === Act.F16) k.roundActs(src, actOff, rows * n, 1);
      else if (kind === Act.BF16) k.roundActs(src, actOff, rows * n, 2);
      else if (kind === Act.Q8_K) {
        k.quantizeQ8K(src, n, rows, actOff, d, s);
      } else {
        k.quantizeQ8(
          src,
          n,
          rows,
          actOff,
          d,
          s,
          kind === Act.Q8_1 ? 1 : 0,
          pnBytes ? s + sBytes : 0,
          groups ? 1 : 0,
        );
      }
      st.actPN = pnForm;
      st.actBuf = X.id;
      st.actVersion = X.version;
      st.actKind = kind;
      st.actRows = rows;
      st.actN = n;
    }
    // Each kernel's extra form of a Q8_K activation is made when the first weight needing it
    // reads the activation (a Q4_K_M layer mixes kernels; most need only one form).
    const actOff = st.act.off;
    // (after the P/N planes or row groups, which only Q8_0 activations have)
    const q4kOff = actOff + qsBytes + dBytes + sBytes + pnBytes;
    // the 16-element sums as i16 (permuteQ6KAct): Q6_K's form, and Q2_K's beside the plain quants
    const sums16 = w.type === GGMLType.Q6_K || w.type === GGMLType.Q2_K;
    const q5k = w.type === GGMLType.Q5_K;
    const q3k = w.type === GGMLType.Q3_K;
    if (w.type === GGMLType.Q4_K && !st.actQ4K) {
      k.permuteQ4KAct(actOff, actOff + qsBytes, actOff + qsBytes + dBytes, q4kOff, n, rows);
      st.actQ4K = true;
    }
    const q6kOff = q4kOff + q4kBytes;
    if (sums16 && !st.actQ6K) {
      k.permuteQ6KAct(actOff + qsBytes + dBytes, q6kOff, n, rows);
      st.actQ6K = true;
    }
    const q5kOff = q6kOff + q6kBytes;
    if (q5k && !st.actQ5K) {
      k.permuteQ5KAct(actOff, actOff + qsBytes + dBytes, q5kOff, n, rows);
      st.actQ5K = true;
    }
    const q3kOff = q5kOff + q5kBytes;
    if (q3k && !st.actQ3K) {
      k.permuteQ3KAct(actOff, q3kOff, n, rows);
      st.actQ3K = true;
    }
    const a = ARGS;
    ctrl[OP] = floatsAct ? OP_MMF : isK ? OP_MMK : OP_MM32;
    ctrl[ARENA] = w.arena;
    ctrl[a + A.KIND] = q8w && this.biasedQ8 ? KIND_Q8_0_BIASED : w.type;
    ctrl[a + A.ROW_BYTES] = w.rowBytes;
    ctrl[a + A.NB] = floatsAct ? n : nb;
    ctrl[a + A.AQ] = actOff;
    ctrl[a + A.AD] = actOff + qsBytes;
    // Q8_0 over P/N planes reads them in the sums' slot (it has no use for the sums); the biased
    // kernel reads the sums, and its row groups after them (groupBase in assembly/index.ts)
    ctrl[a + A.AS] = actOff + qsBytes + dBytes + (q8w && !this.biasedQ8 ? sBytes : 0);
    ctrl[a + A.AQ16] = w.type === GGMLType.Q4_K
      ? q4kOff
      : sums16
      ? q6kOff
      : q5k
      ? q5kOff
      : q3k
      ? q3kOff
      : 0;
    ctrl[a + A.T] = rows;
    if (isK) {
      [ctrl[a + A.SCR], ctrl[a + A.SCR_STRIDE]] = st.threadScratch(
        // the K-quant kernels' decoded headers and float lanes (q5kgRows: 1024 bytes)
        1024,
        this.threads,
      );
    }
    // Parts in chunk order: rows split in chunks of a multiple of 4 (the kernels' row groups),
    // about 4 per thread per part, claimed by the threads in turn.
    const mAll = ws.reduce((sum, v) => sum + v.nRows, 0);
    const threadsUsed = Math.min(this.active(), Math.ceil((mAll * n * rows) / 65536));
    // outputs of a weight outside arena 0 are computed in its arena's scratch, then copied back
    const outOffs: number[] = [];
    let scratchAt = w.arena === 0 ? 0 : st.out.ensure(rows * mAll * 4);
    let end = 0;
    ctrl[a + A.NPARTS] = ws.length;
    for (let p = 0; p < ws.length; p++) {
      const m = ws[p].nRows;
      const chunk = Math.max(4, Math.ceil(Math.ceil(m / (threadsUsed * 4)) / 4) * 4);
      const outOff = w.arena === 0 ? Os[p].off : scratchAt;
      scratchAt += rows * m * 4;
      outOffs.push(outOff);
      end += Math.ceil(m / chunk);
      const base = a + A.PARTS + p * PART_INTS;
      ctrl[base] = ws[p].off;
      ctrl[base + 1] = outOff;
      ctrl[base + 2] = m;
      ctrl[base + 3] = chunk;
      ctrl[base + 4] = end;
    }
    if (threadsUsed > 1) pool.run(mem.kernels);
    else pool.runHere(mem.kernels);
    for (let p = 0; p < ws.length; p++) {
      const bytes = rows * ws[p].nRows * 4;
      if (w.arena !== 0) a0.u8.set(ar.u8.subarray(outOffs[p], outOffs[p] + bytes), Os[p].off);
      Os[p].version++;
    }
  }
}
