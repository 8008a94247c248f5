/**
 * Sampling candidates on the host: the `k` best ids of a logit row (ties to the lower id) and
 * the row's softmax sum, as Backend.topCandidates defines them. The sampler uses them on
 * rows it holds; a backend whose memory the host can read (WASM) answers topCandidates with
 * them in place, without copying the row out.
 *
 * @module
 */
import type { TopCandidates } from "./backend.ts";

/** Ids of the `k` largest values of `logits`, largest first, ties to the lower id. */
export function topIds(logits: Float32Array, k: number): number[] {
  k = Math.max(0, Math.min(k, logits.length));
  if (k > 256) {
    // Many candidates (top-k off): a sort, O(n log n), where the insertion below is O(n·k).
    // Masked (-Infinity) tokens can never be drawn and are left out.
    const ids: number[] = [];
    for (let i = 0; i < logits.length; i++) if (logits[i] > -Infinity) ids.push(i);
    if (ids.length === 0) { for (let i = 0; i < logits.length; i++) ids.push(i); }
    ids.sort((a, b) => logits[b] - logits[a] || a - b);
    return ids.slice(0, k);
  }
  // Partial selection keeps this O(n·k) for small k instead of sorting a 150k vocabulary.
  const ids: number[] = [];
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (ids.length === k && v <= logits[ids[k - 1]]) continue;
    let j = ids.length < k ? ids.length : k - 1;
    if (ids.length < k) ids.push(i);
    while (j > 0 && logits[ids[j - 1]] < v) {
      ids[j] = ids[j - 1];
      j--;
    }
    ids[j] = i;
  }
  return ids;
}

/** log Σ e^v over `logits`, from their maximum (float64 sum, in order). */
export function logSumExp(logits: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  return max + Math.log(sum);
}

/**
 * The candidates Backend.topCandidates returns for one row, computed without copying the row
 * (a backend may pass a view of its own memory): the excluded ids are −∞ while the row is read
 * and get their values back before it returns. The same candidates, order and softmax sum as
 * the sampler's `topLogprobs` over the masked row. Without `sum` the softmax sum (a full pass of
 * exp over the row, for log-probabilities only) is skipped: NaN.
 */
/** Whether `row` holds a NaN. */
function hasNaN(row: Float32Array): boolean {
  for (let i = 0; i < row.length; i++) if (row[i] !== row[i]) return true;
  return false;
}

export function rowCandidates(
  row: Float32Array,
  k: number,
  exclude: Int32Array,
  sum = true,
): TopCandidates {
  const excluded = Float32Array.from(exclude, (i) => row[i]);
  for (const id of exclude) row[id] = -Infinity;
  try {
    const ids = topIds(row, Math.min(k, row.length - new Set(exclude).size));
    // The log-softmax of the best id only: the same lse the sampler's logSoftmax takes.
    const lse = sum ? logSumExp(row) : NaN;
    const best = ids.length ? row[ids[0]] : -Infinity;
    // A NaN never ranks (every comparison with it is false), so the max says the row held one.
    const nan = sum ? Number.isNaN(lse) && hasNaN(row) : hasNaN(row);
    return {
      ids: Int32Array.from(ids),
      values: Float32Array.from(ids, (id) => row[id]),
      excluded,
      max: nan ? NaN : best,
      // log Σ e^v = max − logprob(best), so Σ e^(v − max) = e^(−logprob(best)).
      sumExp: ids.length ? Math.exp(-(best - lse)) : 0,
    };
  } finally {
    // Every value was read before any was masked, so an id listed twice restores alike.
    for (let j = 0; j < exclude.length; j++) row[exclude[j]] = excluded[j];
  }
}
