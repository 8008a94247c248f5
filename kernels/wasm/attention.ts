/**
 * WASM attention jobs: causal attention over a KV cache for one sequence, or for a batch's
 * sequences at once (Backend.attentionMany): each sequence's work items (a block of query rows ×
 * one KV head) listed in a table in the control block (jobs.ts SEQ_TABLE), claimed by every
 * thread, so a batch of decode rows, each too small to split alone, still uses all of them.
 *
 * Numerics are the kernel's (assembly/index.ts `attention`): bit-identical to the reference
 * backend, whichever thread runs which item.
 */
import type { AttentionParams, AttentionSeq } from "../backend.ts";
import { checkHeads, checkKVRange } from "../checks.ts";
import {
  A,
  ARENA,
  ARGS,
  FARGS,
  MAX_SEQS,
  OP,
  OP_ATTN,
  OP_ATTN_MANY,
  SEQ_INTS,
  SEQ_TABLE,
} from "./jobs.ts";
import type { Pool } from "./pool.ts";
import { type Memories, need, type WBuf, wkv } from "./resources.ts";

/** Runs attention of one backend on its memories and pool. */
export class Attentions {
  constructor(
    readonly mem: Memories,
    readonly pool: Pool,
    /** Threads started (scratch is sized for all). */
    readonly threads: number,
    /** Threads the ops use now (setThreads). */
    readonly active: () => number,
  ) {}

  /** Backend.attention of one sequence (its buffers already resolved). */
  one(Q: WBuf, layer: number, O: WBuf, s: AttentionSeq, p: AttentionParams): void {
    const job = this.#attnJob(Q, O, layer, s, p);
    const { pos0, rows } = s;
    this.#attnArgs(OP_ATTN, [job], p);
    const a = ARGS;
    this.pool.ctrl[a + A.AQ] = job.q;
    this.pool.ctrl[a + A.W] = job.k;
    this.pool.ctrl[a + A.VC] = job.v;
    this.pool.ctrl[a + A.OUT] = job.out;
    this.pool.ctrl[a + A.POS0] = pos0;
    this.pool.ctrl[a + A.F16] = job.flags;
    this.pool.ctrl[a + A.T] = rows;
    this.pool.ctrl[a + A.KIND] = job.rowBlock;
    this.pool.ctrl[a + A.NROWS] = job.items;
    this.pool.ctrl[a + A.HEAD_STRIDE] = job.headStride;
    this.pool.ctrl[a + A.HEAD_SPLITS] = job.headSplits;
    this.pool.ctrl[a + A.CHUNK] = 1;
    this.#runSplit(job.work);
    O.version++;
  }

  /** Backend.attentionMany: the sequences' work items in one job per MAX_SEQS sequences. */
  many(Q: WBuf, layer: number, O: WBuf, seqs: readonly AttentionSeq[], p: AttentionParams): void {
    for (let from = 0; from < seqs.length; from += MAX_SEQS) {
      const jobs = seqs.slice(from, from + MAX_SEQS).map((s) => this.#attnJob(Q, O, layer, s, p));
      this.#attnArgs(OP_ATTN_MANY, jobs, p);
      this.pool.ctrl[ARGS + A.NROWS] = jobs.length;
      let end = 0;
      let work = 0;
      for (const [i, j] of jobs.entries()) {
        end += j.items;
        work += j.work;
        this.pool.ctrl.set(
          [
            j.q,
            j.k,
            j.v,
            j.out,
            j.pos0,
            j.rows,
            j.flags,
            j.rowBlock,
            end,
            j.headStride,
            j.headSplits,
          ],
          SEQ_TABLE + i * SEQ_INTS,
        );
      }
      this.#runSplit(work);
    }
    O.version++;
  }

  /**
   * One sequence's attention as the kernel takes it (checked against its cache and buffers):
   * byte offsets, flags, query rows per work item (a block of rows × one KV head) and its work.
   */
  #attnJob(Q: WBuf, O: WBuf, layer: number, s: AttentionSeq, p: AttentionParams) {
    const c = wkv(s.cache);
    const { nHeads, nKVHeads, headDim } = p;
    const { pos0, rows, rowOffset } = s;
    if (!Number.isInteger(rows) || rows < 0) {
      // a negative count would shift every later sequence's work items in attentionMany's table
      throw new Error(`attention: rows ${rows} is not a count`);
    }
    checkHeads(p, c);
    checkKVRange("attention", c, layer, pos0, rows);
    // heads side by side in a row, or each head's entries together (WKV)
    let headStride = headDim;
    if (c.headDim !== c.kvDim) {
      if (c.headDim !== headDim) {
        throw new Error(
          `attention: the KV cache keeps heads of ${c.headDim} elements, not ${headDim}`,
        );
      }
      headStride = c.nCtx * headDim;
    }
    const rowLen = nHeads * headDim;
    need(Q, (rowOffset + rows) * rowLen, "attention q", rowOffset * rowLen);
    need(O, (rowOffset + rows) * rowLen, "attention out", rowOffset * rowLen);
    const lb = c.layerBytes();
    const work = rows * nHeads * (pos0 + rows) * headDim;
    // work items: (block of query rows) × (KV head) × (part of its query heads); each item
    // widens an f16 cache once
    const parts = this.#parts(work);
    const rowBlock = Math.max(
      1,
      Math.ceil(rows / Math.max(1, Math.ceil((parts * 4) / nKVHeads))),
    );
    // A decode (or short prompt) of a model with few KV heads (Gemma 3 1B has one) has fewer
    // items than threads: its groups' query heads are split, in as few parts (a divisor of the
    // group) as give every thread two
    const group = nHeads / nKVHeads;
    const base = Math.ceil(rows / rowBlock) * nKVHeads;
    let headSplits = 1;
    while (base * headSplits < 2 * parts && headSplits < group) {
      headSplits++;
      while (group % headSplits !== 0) headSplits++;
    }
    return {
      q: Q.off + rowOffset * rowLen * 4,
      k: c.kOff + layer * lb,
      v: c.vOff + layer * lb,
      out: O.off + rowOffset * rowLen * 4,
      pos0,
      rows,
      f16: c.type === "f16",
      // the kernel's flags: f16 cache in bit 0, the sliding window above it
      flags: (c.type === "f16" ? 1 : 0) | ((p.window ?? 0) << 1),
      rowBlock,
      items: base * headSplits,
      work,
      headStride,
      headSplits,
    };
  }

  /** An attention op's shared arguments: the op, the heads, the scale and the threads' scratch. */
  #attnArgs(
    op: number,
    jobs: { pos0: number; rows: number; f16: boolean }[],
    p: AttentionParams,
  ): void {
    this.#scratchFor(jobs, p);
    this.pool.ctrl[OP] = op;
    this.pool.ctrl[ARENA] = 0;
    this.pool.ctrl[ARGS + A.NHEADS] = p.nHeads;
    this.pool.ctrl[ARGS + A.NKV] = p.nKVHeads;
    this.pool.ctrl[ARGS + A.HEAD_DIM] = p.headDim;
    this.pool.f32[FARGS] = p.scale;
  }

  /** Per-thread kernel scratch for the largest of these attention jobs. */
  #scratchFor(jobs: { pos0: number; rows: number; f16: boolean }[], p: AttentionParams): void {
    let bytes = 0;
    for (const j of jobs) {
      const nMax = j.pos0 + j.rows;
      bytes = Math.max(bytes, (p.headDim + nMax + 4 + (j.f16 ? 2 * nMax * p.headDim : 0)) * 4 + 64);
    }
    [this.pool.ctrl[ARGS + A.SCR], this.pool.ctrl[ARGS + A.SCR_STRIDE]] = this.mem.states[0]
      .threadScratch(bytes, this.threads);
  }

  /** Threads `work` multiply-adds are worth (at most the active ones). */
  #parts(work: number): number {
    return Math.min(this.active(), Math.ceil(work / 32768));
  }

  /** Run the job in the control block on as many threads as `work` multiply-adds are worth. */
  #runSplit(work: number): void {
    if (this.#parts(work) > 1) this.pool.run(this.mem.kernels);
    else this.pool.runHere(this.mem.kernels);
  }
}
