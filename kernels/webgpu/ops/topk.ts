/**
 * Sampling candidates of logit rows (topk.wgsl): per row the k largest values outside an
 * exclude list, the excluded values, and the max and Σ e^(v − max) for log-probabilities, so a
 * decode step reads back a few bytes instead of a vocabulary of floats. Its reductions take
 * subgroup shuffles when that path is on (same order, same results).
 *
 * @module
 */
import { type Backend, candidatesAt, candidateWords, type TopCandidates } from "../../backend.ts";
import { asBuf, need, type Res } from "../handles.ts";
import { compose } from "../shaders.ts";
import { grid, type OpContext, subgroupVariant } from "./context.ts";

/** The parameters of `Backend.topCandidates` (an optional method there). */
export type TopCandidatesArgs = Parameters<NonNullable<Backend["topCandidates"]>>;

/** Largest k of topCandidates (the shader's per-lane list) and longest exclude list. */
const MAX_CANDIDATES = 64;
const MAX_EXCLUDE = 256;

/** Each row's exclude list sorted ascending (the shader binary-searches it), checked. */
function sortExcluded(exclude: readonly Int32Array[], n: number): Uint32Array[] {
  return exclude.map((ids) => {
    if (ids.length > MAX_EXCLUDE) {
      throw new RangeError(`topCandidates: ${ids.length} excluded ids (at most ${MAX_EXCLUDE})`);
    }
    const u = Uint32Array.from(ids).sort();
    for (let i = 0; i < u.length; i++) {
      if (u[i] >= n || (i > 0 && u[i] === u[i - 1])) {
        throw new RangeError(`topCandidates: excluded ids must be distinct and below ${n}`);
      }
    }
    return u;
  });
}

/**
 * Record topk.wgsl over `rows` rows of `n` logits of `src`, writing row r's candidates at word
 * `outOff + r · outWords` of `out`. `sorted`: each row's exclude list, ascending. Returns outWords.
 */
function encodeTopK(
  ctx: OpContext,
  src: Res,
  rows: number,
  n: number,
  k: number,
  sorted: readonly Uint32Array[],
  out: Res,
  outOff: number,
): number {
  const exWords = sorted.reduce((a, u) => a + u.length, 0);
  const data = ctx.enc.arena((2 * rows + exWords) * 4, 256);
  const d = new Uint32Array(data.chunk.mirror, data.offset, 2 * rows + exWords);
  let at = data.offset / 4 + 2 * rows;
  sorted.forEach((u, r) => {
    d[2 * r] = at;
    d[2 * r + 1] = u.length;
    d.set(u, at - data.offset / 4);
    at += u.length;
  });
  const maxEx = Math.max(...sorted.map((u) => u.length));
  const outWords = 2 * k + maxEx + 2;
  const kmax = 2 ** Math.ceil(Math.log2(k));
  const sg = subgroupVariant(ctx.paths);
  const p = ctx.enc.pipe(
    `topk:${kmax}${sg.key}`,
    () =>
      compose("topk", {
        defines: sg.defines,
        subst: { KMAX: kmax, ...sg.subst },
        prelude: sg.prelude,
      }),
    [[0, "uniform"], [1, "read"], [2, "read"], [3, "storage"]],
  );
  const prm = ctx.enc.params();
  prm.u.set([n, k, n, data.offset / 4, outWords, rows, outOff]);
  const [gx, gy] = grid(rows);
  ctx.enc.dispatch(p, prm.slot, [data.chunk.res, src, out], gx, gy);
  return outWords;
}

function checkK(k: number): void {
  if (!Number.isInteger(k) || k < 1 || k > MAX_CANDIDATES) {
    throw new RangeError(`topCandidates: k ${k} is outside [1, ${MAX_CANDIDATES}]`);
  }
}

/** Submit, run topk.wgsl over `rows` rows of `n` logits, and read the candidates back. */
export async function readTopCandidates(
  ctx: OpContext,
  ...[src, rows, n, k, exclude]: TopCandidatesArgs
): Promise<TopCandidates[]> {
  const s = asBuf(src);
  need(s, rows * n, "topCandidates");
  checkK(k);
  if (exclude.length !== rows) {
    throw new RangeError(`topCandidates: ${exclude.length} exclude lists for ${rows} rows`);
  }
  if (rows === 0) return [];
  // Each row's exclude list goes up sorted; the answer keeps the caller's order.
  const sorted = sortExcluded(exclude, n);
  const maxEx = Math.max(...sorted.map((u) => u.length));
  const out = ctx.gpu.scratch("sampling candidates", rows * (2 * k + maxEx + 2) * 4);
  const outWords = encodeTopK(ctx, s.res, rows, n, k, sorted, out, 0);
  const words = new Float32Array(await ctx.enc.readBack(out, 0, rows * outWords * 4));
  return exclude.map((ids, r) => candidatesAt(words, r * outWords, k, ids, sorted[r]));
}

/** Record the candidates of one row of `n` logits into `dst` at word `offset`, no read. */
export function encodeTopCandidatesInto(
  ctx: OpContext,
  ...[src, n, k, dst, offset]: Parameters<NonNullable<Backend["topCandidatesInto"]>>
): void {
  const s = asBuf(src);
  const d = asBuf(dst);
  need(s, n, "topCandidatesInto");
  checkK(k);
  if (!Number.isInteger(offset) || offset < 0) {
    throw new RangeError(`topCandidatesInto: offset ${offset} is not a word index`);
  }
  need(d, offset + candidateWords(k), "topCandidatesInto");
  encodeTopK(ctx, s.res, 1, n, k, [new Uint32Array()], d.res, offset);
  d.version++;
}
