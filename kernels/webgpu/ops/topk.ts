/**
 * Sampling candidates of logit rows (topk.wgsl): per row the k largest values outside an
 * exclude list, the excluded values, and the max and Σ e^(v − max) for log-probabilities, so a
 * decode step reads back a few bytes instead of a vocabulary of floats. Its reductions take
 * subgroup shuffles when that path is on (same order, same results).
 *
 * @module
 */
import type { Backend, TopCandidates } from "../../backend.ts";
import { asBuf, need } from "../handles.ts";
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

/** Submit, run topk.wgsl over `rows` rows of `n` logits, and read the candidates back. */
export async function readTopCandidates(
  ctx: OpContext,
  ...[src, rows, n, k, exclude]: TopCandidatesArgs
): Promise<TopCandidates[]> {
  const s = asBuf(src);
  need(s, rows * n, "topCandidates");
  if (!Number.isInteger(k) || k < 1 || k > MAX_CANDIDATES) {
    throw new RangeError(`topCandidates: k ${k} is outside [1, ${MAX_CANDIDATES}]`);
  }
  if (exclude.length !== rows) {
    throw new RangeError(`topCandidates: ${exclude.length} exclude lists for ${rows} rows`);
  }
  if (rows === 0) return [];
  // Each row's exclude list goes up sorted; the answer keeps the caller's order.
  const sorted = sortExcluded(exclude, n);
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
  const out = ctx.gpu.scratch("sampling candidates", rows * outWords * 4);
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
  prm.u.set([n, k, n, data.offset / 4, outWords, rows]);
  const [gx, gy] = grid(rows);
  ctx.enc.dispatch(p, prm.slot, [data.chunk.res, s.res, out], gx, gy);
  const bytes = await ctx.enc.readBack(out, 0, rows * outWords * 4);
  const u = new Uint32Array(bytes);
  const f = new Float32Array(bytes);
  return exclude.map((ids, r) => {
    const o = r * outWords;
    const sortedIds = sorted[r];
    const nEx = sortedIds.length;
    let have = 0;
    while (have < k && u[o + have] !== 0xffffffff) have++;
    // Back to the caller's order of excluded ids.
    const excluded = Float32Array.from(ids, (id) => {
      let lo = 0, hi = nEx;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (sortedIds[mid] < id) lo = mid + 1;
        else hi = mid;
      }
      return f[o + 2 * k + lo];
    });
    return {
      ids: Int32Array.from(u.subarray(o, o + have)),
      values: f.slice(o + k, o + k + have),
      excluded,
      max: f[o + 2 * k + nEx],
      sumExp: f[o + 2 * k + nEx + 1],
    };
  });
}
