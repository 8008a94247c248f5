/**
 * A frame's lookahead: greedy tokens decoded after its own on the device in one run, with one
 * read back for all of them (which a GPU in Deno needs: each read costs at least 10 ms).
 *
 * @module
 */
import type { LlamaStage } from "../../model/llama.ts";
import type { PendingStep } from "./prefill_slices.ts";
import type { SampledToken } from "./stage_frame.ts";
import { corruptLogits, finiteCandidates } from "./tail_sampling.ts";

/** Decodes a lone frame's lookahead and keeps the recent cost per token. */
export class Lookahead {
  /** Recent milliseconds per token of runs (0 until one has run). */
  #msPerToken = 0;
  /** How long the last run that decoded anything took, ms. */
  lastMs = 0;

  /**
   * @param stage the stage's layers
   * @param budgetMs the most a run may take, at the recent cost per token
   */
  constructor(readonly stage: LlamaStage, readonly budgetMs: number) {}

  /**
   * Up to `frame.lookahead` greedy tokens after `token`. Only where the result equals
   * frame-by-frame decoding and nobody waits behind it: a whole-model stage whose backend keeps
   * candidates on the device, plain greedy sampling (no penalties, no constraint), no other frame
   * queued (`queued`: a run holds the stage for its whole length), and room in the session's
   * context. A run takes at most `budgetMs` of the stage's recent time per token (this frame's
   * time, `frameMs`, until a run has been measured), so a slow device decodes few tokens ahead,
   * or none, and streaming stays interactive.
   */
  async run(
    p: PendingStep,
    token: number,
    frameMs: number,
    queued: boolean,
  ): Promise<SampledToken[]> {
    const perToken = this.#msPerToken || frameMs;
    const fit = Math.floor(this.budgetMs / Math.max(perToken, 1e-3));
    const want = Math.min(p.frame.lookahead ?? 0, fit);
    const sampler = p.hosted.sampler;
    const s = p.hosted.session;
    if (want <= 0 || !sampler || !sampler.isPlainGreedy || queued) return [];
    if (!this.stage.decodesOnDevice) return [];
    const n = Math.min(want, s.nCtx - s.pos);
    if (n <= 0) return [];
    const topN = p.hosted.topLogprobs;
    const t0 = performance.now();
    const run = await this.stage.decodeGreedy(s, token, n, Math.max(1, topN));
    const more: SampledToken[] = [];
    let fed = token;
    for (const c of run) {
      // A NaN mid-run fails the request as a frame's own row would (tail_sampling.ts).
      if (!finiteCandidates(c)) throw corruptLogits();
      sampler.accept(Int32Array.of(fed));
      const { id, logprob, top } = sampler.pickCandidates(c, topN);
      if (id !== c.ids[0]) {
        throw new Error(`greedy pick ${id} is not the device's best ${c.ids[0]}`);
      }
      more.push({ id, logprob, top });
      fed = id;
    }
    const ms = performance.now() - t0;
    this.lastMs = ms;
    this.#msPerToken = this.#msPerToken ? (this.#msPerToken + ms / n) / 2 : ms / n;
    return more;
  }
}
