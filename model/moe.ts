/**
 * Mixture-of-experts routing as llama.cpp computes it for qwen3moe (`build_moe_ffn` with softmax
 * gating and `norm_w`): softmax over every expert's router logit, the `k` most probable experts,
 * their probabilities divided by their sum.
 *
 * It runs on the host, on router logits read back from the backend: the choice of experts is
 * data-dependent control flow (which rows go to which expert's matmuls), and doing it in one
 * place makes every backend route identically. The float order replays ggml's CPU ops, because a
 * router logit near a tie picks a different expert on a last-bit difference.
 */
import { expfGgml } from "../kernels/reference/ggml_math.ts";

const fr = Math.fround;

/** The experts each token uses, in descending probability, and their renormalised weights. */
export interface Routes {
  /** `[tokens × k]` expert indices. */
  readonly experts: Int32Array;
  /** `[tokens × k]` weights (f32 values). */
  readonly weights: Float32Array;
}

/**
 * ggml_soft_max_f32 over one row (scale 1, no mask), in place: exp of each lane through
 * ggml_v_expf four at a time (summed as (e0 + e1) + (e2 + e3) in float, groups added in double),
 * libm expf for the tail, then a multiply by the float reciprocal of the sum.
 */
export function softmaxGgml(row: Float32Array): void {
  const n = row.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (row[i] > max) max = row[i];
  let sum = 0;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    const e0 = expfGgml(fr(row[i] - max));
    const e1 = expfGgml(fr(row[i + 1] - max));
    const e2 = expfGgml(fr(row[i + 2] - max));
    const e3 = expfGgml(fr(row[i + 3] - max));
    row[i] = e0;
    row[i + 1] = e1;
    row[i + 2] = e2;
    row[i + 3] = e3;
    sum += fr(fr(e0 + e1) + fr(e2 + e3));
  }
  for (; i < n; i++) {
    const e = fr(Math.exp(fr(row[i] - max)));
    row[i] = e;
    sum += e;
  }
  const inv = fr(1 / sum);
  for (let j = 0; j < n; j++) row[j] = fr(row[j] * inv);
}

/** Route `tokens` rows of `[tokens × nExperts]` router logits to `k` experts each. */
export function routeTokens(
  logits: Float32Array,
  tokens: number,
  nExperts: number,
  k: number,
): Routes {
  const experts = new Int32Array(tokens * k);
  const weights = new Float32Array(tokens * k);
  const order = Array.from({ length: nExperts }, (_, e) => e);
  for (let t = 0; t < tokens; t++) {
    const probs = logits.slice(t * nExperts, (t + 1) * nExperts);
    softmaxGgml(probs);
    // ggml_argsort (descending), ties to the lower index; then the first k.
    order.sort((a, b) => probs[b] - probs[a] || a - b);
    // ggml_sum_rows sums in double and rounds once; ggml_div divides in float.
    let sum = 0;
    for (let j = 0; j < k; j++) sum += probs[order[j]];
    // llama.cpp clamps the sum to f16's smallest normal so a row of zeros cannot divide by 0.
    const total = Math.max(fr(sum), 6.103515625e-5);
    for (let j = 0; j < k; j++) {
      experts[t * k + j] = order[j];
      weights[t * k + j] = fr(probs[order[j]] / total);
    }
  }
  return { experts, weights };
}
