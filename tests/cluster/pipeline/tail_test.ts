/**
 * The tail samples from host-computed candidates (hostCandidates) so penalties are applied once;
 * the token must be the one Sampler.pick chooses from the whole row, for every setting.
 */
import { sampleFrame } from "../../../cluster/pipeline/tail_sampling.ts";
import type { PendingStep } from "../../../cluster/pipeline/prefill_slices.ts";
import { hostCandidates, Rng, Sampler, type SamplerParams } from "../../../model/sampler.ts";
import { assert, assertEquals } from "../../support/assert.ts";

const settings: SamplerParams[] = [
  { temperature: 0 },
  { temperature: 0, repeatPenalty: 1.3 },
  { temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05 },
  { temperature: 1.2, topK: 5, topP: 1, minP: 0, presencePenalty: 0.7, frequencyPenalty: 0.3 },
  { temperature: 0.7, topK: 64, topP: 0.5, minP: 0.1, repeatPenalty: 1.1, repeatLastN: 8 },
  // logit_bias: the biased ids are merged back like the penalised ones (here a tie at the top
  // banned, another id lifted, and one id both biased and penalised).
  { temperature: 0, logitBias: { 17: -100, 3: 4.5 } },
  { temperature: 0.9, topK: 10, repeatPenalty: 1.2, logitBias: { 400: 2, 5: -1.5, 17: 0.25 } },
];

Deno.test("tail sampling from host candidates picks what Sampler.pick picks from the row", () => {
  const rng = new Rng(99);
  for (const [n, p] of settings.entries()) {
    for (let trial = 0; trial < 40; trial++) {
      const row = Float32Array.from({ length: 500 }, () => (rng.next() - 0.5) * 12);
      // Ties at the top: the lower id must win on both paths.
      row[17] = row[400] = 9;
      const history = Array.from({ length: 12 }, () => Math.floor(rng.next() * 500));
      const viaRow = new Sampler({ ...p, seed: 1000 + trial });
      const viaCandidates = new Sampler({ ...p, seed: 1000 + trial });
      viaRow.accept([...history, 17]);
      viaCandidates.accept([...history, 17]);
      const want = viaCandidates.candidateRequest(3);
      assert(want, `settings ${n} need the whole row`);
      const c = hostCandidates(row, want)!;
      const got = viaCandidates.pickCandidates(c, 3);
      assertEquals(got.id, viaRow.pick(row), `settings ${n}, trial ${trial}`);
      assertEquals(got.top.length, 3);
    }
  }
});

Deno.test("without log-probabilities the tail skips the softmax sum and picks the same tokens", () => {
  const rng = new Rng(7);
  for (const [n, p] of settings.entries()) {
    for (let trial = 0; trial < 20; trial++) {
      const row = Float32Array.from({ length: 500 }, () => (rng.next() - 0.5) * 12);
      const history = Array.from({ length: 12 }, () => Math.floor(rng.next() * 500));
      const full = new Sampler({ ...p, seed: 50 + trial });
      const lean = new Sampler({ ...p, seed: 50 + trial, logprob: false });
      full.accept(history);
      lean.accept(history);
      const wantLean = lean.candidateRequest(0)!;
      assertEquals(wantLean.sum, false, `settings ${n}`);
      assertEquals(full.candidateRequest(0)!.sum, true);
      assertEquals(lean.candidateRequest(3)!.sum, true, "top log-probabilities need the sum");
      const c = hostCandidates(row, wantLean)!;
      assert(Number.isNaN(c.sumExp));
      const got = lean.pickCandidates(c, 0);
      const ref = full.pickCandidates(hostCandidates(row, full.candidateRequest(0))!, 0);
      assertEquals(got.id, ref.id, `settings ${n}, trial ${trial}`);
      assert(Number.isNaN(got.logprob) && Number.isFinite(ref.logprob));
    }
  }
});

Deno.test("the full-row path (top-k off) skips the log-softmax too, with the same token", () => {
  const rng = new Rng(3);
  const row = Float32Array.from({ length: 300 }, () => (rng.next() - 0.5) * 10);
  const step = (topLogprobs: number) =>
    ({ frame: { tokens: Int32Array.of(1) }, hosted: { topLogprobs } }) as unknown as PendingStep;
  for (const topN of [0, 2]) {
    const full = new Sampler({ temperature: 0.9, topK: 0, seed: 11 });
    const lean = new Sampler({ temperature: 0.9, topK: 0, seed: 11, logprob: false });
    assertEquals(lean.candidateRequest(topN), null, "top-k off samples from the whole row");
    const a = sampleFrame(step(topN), full, { logits: row });
    const b = sampleFrame(step(topN), lean, { logits: row });
    assertEquals(b.id, a.id);
    assert(Number.isFinite(a.logprob));
    assertEquals(Number.isNaN(b.logprob), topN === 0, `topN ${topN}`);
    assertEquals(b.top.length, topN);
  }
});
