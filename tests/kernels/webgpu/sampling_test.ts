/**
 * Sampling on the GPU: topCandidates against a host computation of the same row, the sampler's
 * device path against its host path for the same seeds (every setting of the chain), and a whole
 * generation on the WebGPU backend against the reference backend's host sampling, reading back
 * at most 1 KiB per decode step. Runs on llvmpipe in CI; skipped without an adapter.
 */
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { createWebGPUBackend, type WebGPUBackend } from "../../../kernels/webgpu/mod.ts";
import { Engine } from "../../../cluster/pipeline/mod.ts";
import { logSoftmax, Sampler, type SamplerParams, topLogprobs } from "../../../model/sampler.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { REPO } from "../../support/paths.ts";
import { bufOf, ignore } from "./helpers.ts";

const T = { ignore };

/** Seeded logits with deliberate ties (values on a 1/64 grid) so tie-breaking is exercised. */
function logitsRow(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return Math.round(((s >>> 8) / 2 ** 24 - 0.5) * 12 * 64) / 64;
  });
}

/** The k best (value desc, id asc) of `row` outside `exclude`, computed on the host. */
function hostTop(row: Float32Array, k: number, exclude: Int32Array) {
  const ex = new Set(exclude);
  const ids = [...row.keys()].filter((i) => !ex.has(i));
  ids.sort((a, b) => row[b] - row[a] || a - b);
  let max = -Infinity;
  for (const i of ids) max = Math.max(max, row[i]);
  let sum = 0;
  for (const i of ids) sum += Math.exp(row[i] - max);
  return { ids: ids.slice(0, k), max, sum };
}

Deno.test({
  ...T,
  name: "webgpu topCandidates: k best outside the exclude list, ties to the lower id, sums",
  fn: async () => {
    const gpu = await createWebGPUBackend();
    try {
      for (const [n, rows, k, nEx] of [[1000, 3, 40, 7], [32000, 1, 1, 0], [517, 2, 64, 256]]) {
        const all = new Float32Array(rows * n);
        const exclude: Int32Array[] = [];
        for (let r = 0; r < rows; r++) {
          all.set(logitsRow(n, 17 + r + n), r * n);
          // Excluded ids in no particular order, taken among the best so they matter.
          const best = hostTop(all.subarray(r * n, (r + 1) * n), nEx, new Int32Array()).ids;
          exclude.push(Int32Array.from(best.filter((_, i) => (i + r) % 2 === 0 || nEx > 100)));
          exclude[r].reverse();
        }
        const buf = bufOf(gpu, all);
        const got = await gpu.topCandidates(buf, rows, n, k, exclude);
        for (let r = 0; r < rows; r++) {
          const row = all.subarray(r * n, (r + 1) * n);
          const want = hostTop(row, k, exclude[r]);
          const what = `n ${n} row ${r} k ${k}`;
          assertEquals(Array.from(got[r].ids), want.ids, `${what}: ids`);
          assertEquals(Array.from(got[r].values), want.ids.map((i) => row[i]), `${what}: values`);
          assertEquals(Array.from(got[r].excluded), Array.from(exclude[r], (i) => row[i]));
          assertEquals(got[r].max, want.max, `${what}: max`);
          const rel = Math.abs(got[r].sumExp - want.sum) / want.sum;
          assert(rel < 1e-5, `${what}: Σ e^(v − max) ${got[r].sumExp} vs ${want.sum}`);
        }
        gpu.free(buf);
      }
    } finally {
      gpu.dispose();
    }
  },
});

const SETTINGS: [string, SamplerParams, number][] = [
  ["greedy", { temperature: 0 }, 0],
  ["greedy, penalties, 5 logprobs", {
    temperature: 0,
    repeatPenalty: 1.3,
    frequencyPenalty: 0.4,
    presencePenalty: 0.2,
  }, 5],
  ["llama.cpp defaults", {}, 0],
  ["temperature 1.2, top-k 64, top-p 0.8, min-p 0.01, penalties, 3 logprobs", {
    temperature: 1.2,
    topK: 64,
    topP: 0.8,
    minP: 0.01,
    repeatPenalty: 1.1,
    frequencyPenalty: 0.3,
    presencePenalty: 0.5,
    repeatLastN: 16,
  }, 3],
];

Deno.test({
  ...T,
  name: "webgpu topCandidates: a row with one NaN says so (max NaN); the NaN never ranks",
  fn: async () => {
    // Before: a NaN lane's sum was dropped in the merge and the max stayed finite, so a greedy
    // step answered from a row the model had broken.
    const gpu = await createWebGPUBackend();
    try {
      const n = 2000;
      const row = logitsRow(n, 9);
      row[1234] = NaN;
      const buf = bufOf(gpu, row);
      for (const k of [1, 4]) {
        const [c] = await gpu.topCandidates(buf, 1, n, k, [new Int32Array()], false);
        assert(Number.isNaN(c.max), `k ${k}: max ${c.max}`);
        assert(!Array.from(c.values).some(Number.isNaN), `k ${k}: a NaN ranked`);
      }
      const clean = logitsRow(n, 9);
      const ok = bufOf(gpu, clean);
      const [c] = await gpu.topCandidates(ok, 1, n, 4, [new Int32Array()], true);
      assertEquals(c.max, hostTop(clean, 4, new Int32Array()).max);
      gpu.free(buf);
      gpu.free(ok);
    } finally {
      gpu.dispose();
    }
  },
});

Deno.test({
  ...T,
  name: "webgpu sampling: the device path picks the host sampler's tokens for the same seeds",
  fn: async () => {
    const gpu = await createWebGPUBackend();
    try {
      const n = 3000;
      for (const [label, params, topN] of SETTINGS) {
        for (const seed of [1, 2, 3]) {
          const host = new Sampler({ ...params, seed });
          const dev = new Sampler({ ...params, seed });
          const prompt = [5, 9, 5, 100, 2999, 7];
          host.accept(prompt);
          dev.accept(prompt);
          for (let step = 0; step < 24; step++) {
            const row = logitsRow(n, seed * 1000 + step);
            // Push recently seen ids to the top, so the penalties decide picks.
            for (const id of prompt) row[id] += 3;
            const pen = host.penalisedLogits(row);
            const want = host.pick(row);
            const req = dev.candidateRequest(topN);
            assert(req, `${label}: the device path applies`);
            const buf = bufOf(gpu, row);
            const [c] = await gpu.topCandidates(buf, 1, n, req.k, [req.exclude]);
            gpu.free(buf);
            const got = dev.pickCandidates(c, topN);
            const what = `${label}, seed ${seed}, step ${step}`;
            assertEquals(got.id, want, `${what}: token`);
            const lp = logSoftmax(pen);
            assert(Math.abs(got.logprob - lp[want]) < 1e-5, `${what}: logprob`);
            const top = topLogprobs(pen, topN);
            assertEquals(got.top.map((t) => t.id), top.map((t) => t.id), `${what}: top ids`);
            for (const [i, t] of top.entries()) {
              assertEquals(got.top[i].logit, t.logit);
              assert(Math.abs(got.top[i].logprob - t.logprob) < 1e-5, `${what}: top logprob`);
            }
            host.accept([want]);
            dev.accept([got.id]);
          }
        }
      }
      // Settings the device cannot serve ask for the whole row instead.
      assertEquals(new Sampler({ topK: 0 }).candidateRequest(), null);
      assertEquals(new Sampler({ topK: 65 }).candidateRequest(), null);
      assertEquals(new Sampler({ temperature: 0 }).candidateRequest(65), null);
    } finally {
      gpu.dispose();
    }
  },
});

const MODEL = `${REPO}/models/stories260K.gguf`;

Deno.test({
  ...T,
  name: "webgpu sampling: a seeded generation equals the reference backend's, ≤ 1 KiB per step",
  fn: async () => {
    const ref = await Engine.open(MODEL, createReferenceBackend());
    const gpuBackend: WebGPUBackend = await createWebGPUBackend();
    // Runs of 16 whatever this machine's speed (the time cap would vary the read count).
    const gpu = await Engine.open(MODEL, gpuBackend, { lookaheadMs: 1e9 });
    try {
      for (const [label, params] of SETTINGS) {
        const opts = { prompt: "Once upon a time", maxTokens: 24, stopAtEog: false };
        const want = await ref.generate({ ...opts, sampler: { ...params, seed: 42 } });
        const before = { ...gpuBackend.stats };
        const got = await gpu.generate({ ...opts, sampler: { ...params, seed: 42 } });
        assertEquals(got.tokens, want.tokens, label);
        // One read per step: the prompt's pass and every decode step but the last token's.
        // Plain greedy decodes 16 tokens ahead per decode frame with the ids on the device (Head
        // lookahead): the prompt's frame (1 token, 1 read), then frames of 17 and 6 tokens, each
        // one read for its pass and one for its run.
        const steps = got.tokens.length;
        const reads = gpuBackend.stats.reads - before.reads;
        const bytes = gpuBackend.stats.bytesRead - before.bytesRead;
        assertEquals(reads, new Sampler(params).isPlainGreedy ? 5 : steps, `${label}: reads`);
        assert(bytes / steps <= 1024, `${label}: ${bytes / steps} bytes read back per step`);
      }
    } finally {
      ref.close();
      gpu.close();
    }
  },
});
