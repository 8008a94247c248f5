/**
 * The tail's sampling of a frame's output row, as StageHost runs it: from the logit row, or from
 * the top candidates the backend computed on the device (a few hundred bytes read back instead
 * of the row), with the frame's tokens taken into the sampler's penalty history once.
 */
import type { TopCandidates } from "../../kernels/backend.ts";
import type { StageOutput } from "../../model/llama.ts";
import {
  type CandidateRequest,
  hostCandidates,
  logSoftmax,
  reportedLogprob,
  type Sampler,
  topLogprobs,
} from "../../model/sampler.ts";
import type { PendingStep } from "./prefill_slices.ts";
import { type SampledToken, StageSessionError } from "./stage_frame.ts";

/**
 * What a sampling tail can read back instead of the logit row: the backend's top candidates
 * (`device`: it computes them), when the settings allow; null otherwise. The sampler takes the
 * frame's tokens into its penalty history first.
 */
export function candidateRequest(
  p: PendingStep,
  device: boolean,
): CandidateRequest | null {
  const sampler = p.hosted.sampler;
  if (!sampler || !device) return null;
  sampler.accept(p.frame.tokens);
  p.accepted = true;
  return sampler.candidateRequest(p.hosted.topLogprobs);
}

/** The tail's token for a frame's output row (or the device's candidates for it). */
export function sampleFrame(
  p: PendingStep,
  sampler: Sampler,
  out: Exclude<StageOutput, { hidden: Float32Array }> | { candidates: TopCandidates },
): SampledToken {
  if (!p.accepted) sampler.accept(p.frame.tokens);
  if ("candidates" in out ? !finiteCandidates(out.candidates) : !finiteRow(out.logits)) {
    // Before, argmax skipped the NaNs and the reply was tokens, and different ones with
    // logprobs asked for (their softmax is NaN): a silent wrong answer.
    throw corruptLogits();
  }
  const topN = p.hosted.topLogprobs;
  const candidates = "candidates" in out
    ? out.candidates
    : hostCandidates(out.logits, sampler.candidateRequest(topN));
  // Penalties are applied once, to the penalised ids only; the choice equals pick()'s.
  if (candidates) return sampler.pickCandidates(candidates, topN);
  // Settings that need the whole row (top-k off with temperature, k above 64).
  if (!("logits" in out)) throw new Error("the stage read candidates the sampler cannot use");
  const id = sampler.pick(out.logits);
  // Log-probabilities only when wanted (SamplerParams.logprob): a pass of exp over the row.
  if (!sampler.wantsLogprobs(topN)) return { id, logprob: NaN, top: [] };
  const penalised = sampler.penalisedLogits(out.logits);
  const lp = logSoftmax(penalised);
  return { id, logprob: reportedLogprob(lp[id]), top: topN ? topLogprobs(penalised, topN) : [] };
}

/** No NaN or +∞ in a logit row (−∞ is a masked token, and fine). */
function finiteRow(row: Float32Array): boolean {
  for (let i = 0; i < row.length; i++) {
    const v = row[i];
    if (v !== v || v === Infinity) return false;
  }
  return true;
}

/**
 * The device's candidates came from a row without NaN or +∞ (TopCandidates.max is NaN for a row
 * with a NaN). Not the softmax sum: it is NaN whenever it was not asked for (no logprobs).
 */
export function finiteCandidates(c: TopCandidates): boolean {
  if (Number.isNaN(c.max) || c.max === Infinity) return false;
  for (const v of c.values) if (v !== v || v === Infinity) return false;
  for (const v of c.excluded) if (v !== v || v === Infinity) return false;
  return true;
}

/** The failure of a request whose output logits hold NaN or +∞. */
export function corruptLogits(): StageSessionError {
  return new StageSessionError(
    "the model's output logits hold NaN or +Infinity (its weights hold NaN or Inf, or a " +
      "computation overflowed): this model cannot be served as it is",
    "corrupt",
  );
}
