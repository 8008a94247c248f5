import { assertEquals, assertThrows } from "../support/assert.ts";
import {
  argmax,
  logSoftmax,
  Rng,
  Sampler,
  SamplerParamError,
  seed32,
  topLogprobs,
} from "../../model/sampler.ts";

Deno.test("argmax ties go to the lower id (llama.cpp's greedy rule)", () => {
  assertEquals(argmax(Float32Array.of(1, 3, 3, 2)), 1);
  assertEquals(argmax(Float32Array.of(-5)), 0);
});

Deno.test("greedy sampling is argmax regardless of seed", () => {
  const logits = Float32Array.of(0.1, 2.5, 2.4, -1);
  for (const seed of [1, 2, 3]) {
    assertEquals(new Sampler({ temperature: 0, seed }).sample(logits), 1);
  }
});

Deno.test("same seed, same draws; different seeds differ", () => {
  const logits = new Float32Array(50).map((_, i) => Math.sin(i) * 2);
  const draw = (seed: number) => {
    const s = new Sampler({ temperature: 1, topK: 0, topP: 1, minP: 0, seed });
    return Array.from({ length: 40 }, () => s.sample(logits));
  };
  assertEquals(draw(7), draw(7));
  assertEquals(draw(7).join() === draw(8).join(), false);
});

Deno.test("top-k 1 is greedy even at high temperature", () => {
  const logits = Float32Array.of(0, 1, 5, 2);
  const s = new Sampler({ temperature: 5, topK: 1, seed: 3 });
  for (let i = 0; i < 20; i++) assertEquals(s.sample(logits), 2);
});

Deno.test("top-p keeps only the nucleus", () => {
  // probabilities ≈ 0.88, 0.12, tiny: top-p 0.5 keeps just the first.
  const logits = Float32Array.of(4, 2, -10, -10);
  const s = new Sampler({ temperature: 1, topK: 0, topP: 0.5, minP: 0, seed: 9 });
  for (let i = 0; i < 50; i++) assertEquals(s.sample(logits), 0);
});

Deno.test("min-p drops tokens far below the top one", () => {
  const logits = Float32Array.of(0, 0, -20);
  const s = new Sampler({ temperature: 1, topK: 0, topP: 1, minP: 0.1, seed: 5 });
  const seen = new Set(Array.from({ length: 200 }, () => s.sample(logits)));
  assertEquals(seen.has(2), false);
  assertEquals(seen.size, 2);
});

Deno.test("sampling follows the distribution (temperature 1, no truncation)", () => {
  const logits = Float32Array.of(Math.log(0.7), Math.log(0.2), Math.log(0.1));
  const s = new Sampler({ temperature: 1, topK: 0, topP: 1, minP: 0, seed: 11 });
  const counts = [0, 0, 0];
  const n = 20000;
  for (let i = 0; i < n; i++) counts[s.sample(logits)]++;
  for (const [i, p] of [0.7, 0.2, 0.1].entries()) {
    if (Math.abs(counts[i] / n - p) > 0.02) throw new Error(`token ${i}: ${counts[i] / n} vs ${p}`);
  }
});

Deno.test("repetition penalty divides positive and multiplies negative logits", () => {
  const s = new Sampler({ temperature: 0, repeatPenalty: 2, seed: 1 });
  s.accept([0]);
  // logit 3 / 2 = 1.5 < 2 → token 1 wins
  assertEquals(s.sample(Float32Array.of(3, 2)), 1);
  const t = new Sampler({ temperature: 0, repeatPenalty: 2, seed: 1 });
  t.accept([1]);
  // -1 × 2 = -2 < -1.5 → token 0 wins
  assertEquals(t.sample(Float32Array.of(-1.5, -1)), 0);
});

Deno.test("frequency and presence penalties subtract per occurrence and once", () => {
  const s = new Sampler({ temperature: 0, frequencyPenalty: 1, presencePenalty: 0.5, seed: 1 });
  s.accept([0, 0]);
  // 3 - 2×1 - 0.5 = 0.5 < 1
  assertEquals(s.sample(Float32Array.of(3, 1)), 1);
});

Deno.test("penalties only look at the last repeatLastN tokens", () => {
  const s = new Sampler({ temperature: 0, presencePenalty: 10, repeatLastN: 1, seed: 1 });
  s.accept([0, 1]);
  assertEquals(s.sample(Float32Array.of(3, 1)), 0);
});

Deno.test("invalid settings name the setting", () => {
  assertThrows(() => new Sampler({ topP: 0 }), SamplerParamError, "topP");
  assertThrows(() => new Sampler({ temperature: NaN }), SamplerParamError, "temperature");
  assertThrows(() => new Sampler({ topK: -1 }), SamplerParamError, "topK");
});

Deno.test("logSoftmax and topLogprobs agree and are normalized", () => {
  const logits = Float32Array.of(1, 2, 3, 0.5);
  const lp = logSoftmax(logits);
  const total = lp.reduce((a, b) => a + Math.exp(b), 0);
  if (Math.abs(total - 1) > 1e-12) throw new Error(`sum ${total}`);
  const top = topLogprobs(logits, 2);
  assertEquals(top.map((t) => t.id), [2, 1]);
  // Reported at float32 precision, as the wire carries them (the same on every path).
  assertEquals(top[0].logprob, Math.fround(lp[2]));
});

Deno.test("Rng is uniform-ish and in [0, 1)", () => {
  const r = new Rng(123);
  let sum = 0;
  for (let i = 0; i < 10000; i++) {
    const x = r.next();
    if (x < 0 || x >= 1) throw new Error(`out of range: ${x}`);
    sum += x;
  }
  if (Math.abs(sum / 10000 - 0.5) > 0.02) throw new Error(`mean ${sum / 10000}`);
});

Deno.test("a fresh sampler fed the history draws what the original drew (replay after failure)", () => {
  const logits = (step: number) => new Float32Array(40).map((_, i) => Math.cos(i * 0.7 + step));
  const params = { temperature: 1.2, topK: 0, topP: 1, minP: 0, repeatPenalty: 1.1, seed: 77 };
  const prompt = [3, 9, 4];
  const a = new Sampler(params);
  a.accept(prompt);
  const out: number[] = [];
  for (let i = 0; i < 12; i++) out.push(a.sample(logits(i)));
  for (const k of [0, 5, 11]) {
    const b = new Sampler(params);
    b.accept([...prompt, ...out.slice(0, k)]);
    assertEquals(b.pick(logits(k)), out[k], `replayed draw ${k}`);
  }
});

Deno.test("top-k off over a 150k vocabulary sorts once instead of an O(n·k) insertion", () => {
  // Before: topIds inserted each of 152k ids into a 152k list (~10^10 steps) per token.
  const logits = new Float32Array(152_000).map((_, i) => Math.sin(i * 12.9898) * 3);
  const s = new Sampler({ temperature: 1, topK: 0, topP: 1, minP: 0, seed: 5 });
  const t0 = performance.now();
  const ids = Array.from({ length: 3 }, () => s.sample(logits));
  assertEquals(performance.now() - t0 < 5000, true);
  // The draw is over the whole row: the same seed gives the same ids.
  const again = new Sampler({ temperature: 1, topK: 0, topP: 1, minP: 0, seed: 5 });
  assertEquals(Array.from({ length: 3 }, () => again.sample(logits)), ids);
});

Deno.test("topLogprobs leaves masked tokens out (a JSON constraint's −∞ is no alternative)", () => {
  const top = topLogprobs(Float32Array.of(-Infinity, 2, -Infinity, 1), 4);
  assertEquals(top.map((t) => t.id), [1, 3]);
  for (const t of top) assertEquals(Number.isFinite(t.logprob), true);
});

Deno.test("seeds beyond 32 bits draw their own tokens; seeds below keep theirs", () => {
  assertEquals(seed32(0), 0);
  assertEquals(seed32(12345), 12345, "a 32-bit seed is unchanged (its outputs stay the same)");
  assertEquals(seed32(2 ** 32 - 1), 2 ** 32 - 1);
  // Before, the draw kept the low 32 bits: these all drew like 0 (or like 2^32 − 1).
  const seeds = [0, 2 ** 32, 2 ** 33, 2 ** 52, -(2 ** 32), 2 ** 32 - 1, -1];
  assertEquals(new Set(seeds.map(seed32)).size, seeds.length);
  assertThrows(() => new Sampler({ seed: 2 ** 60 }), SamplerParamError, "seed");
});

Deno.test("logit bias: added before penalties, -100 bans, +100 forces, ids past the row ignored", () => {
  const logits = Float32Array.from([1, 5, 3, 2]);
  const greedy = (logitBias: Record<number, number>, history: number[] = [], rp = 1) => {
    const s = new Sampler({ temperature: 0, logitBias, repeatPenalty: rp });
    s.accept(history);
    return s.pick(logits);
  };
  assertEquals(greedy({}), 1);
  assertEquals(greedy({ 1: -100 }), 2, "the best token banned");
  assertEquals(greedy({ 0: 100 }), 0, "the worst token forced");
  assertEquals(greedy({ 9: 100 }), 1, "an id past the row names no token");
  // llama.cpp's chain: the bias first, then the repetition penalty on the biased logit:
  // token 2: (3 + 4) / 2 = 3.5 < 5 / 1 … token 1 recent too: 5 / 2 = 2.5 → token 2 wins.
  assertEquals(greedy({ 2: 4 }, [1, 2], 2), 2);
  const s = new Sampler({ temperature: 0, logitBias: { 2: 4 }, repeatPenalty: 2 });
  s.accept([1, 2]);
  assertEquals(Array.from(s.penalisedLogits(logits)), [1, 2.5, 3.5, 2]);
  assertThrows(() => new Sampler({ logitBias: { [-1]: 1 } }), SamplerParamError, "logitBias");
  assertThrows(() => new Sampler({ logitBias: { 1: NaN } }), SamplerParamError, "logitBias");
});
