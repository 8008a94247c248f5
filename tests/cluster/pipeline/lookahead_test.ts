/**
 * Greedy lookahead (StageFrame.lookahead, HeadOptions.lookahead): a whole-model GPU stage decodes
 * several greedy tokens per frame with the ids on the device. The generation must be exactly the
 * frame-by-frame one — ids, log-probabilities, top alternatives, finish reasons, stops inside a
 * run, max tokens that are no multiple of the run — and the stage must decline when it would
 * change results or hold others up (penalties, another frame waiting). WebGPU on llvmpipe in CI;
 * skipped without an adapter. Backends without device candidates never decode ahead.
 */
import type { Backend } from "../../../kernels/backend.ts";
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { createWebGPUBackend, probeAdapter } from "../../../kernels/webgpu/mod.ts";
import { Engine, type GenerateOptions } from "../../../cluster/pipeline/engine.ts";
import { StageHost } from "../../../cluster/pipeline/stage_host.ts";
import { Head, type HeadRequest } from "../../../cluster/pipeline/head.ts";
import { LocalStageLink } from "../../../cluster/pipeline/local_link.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { REPO } from "../../support/paths.ts";

const MODEL = `${REPO}/models/stories260K.gguf`;
const noGpu = !(await probeAdapter()).available;

async function both(backend: () => Promise<Backend>, req: GenerateOptions) {
  const out = [];
  for (const lookahead of [0, 16]) {
    const engine = await Engine.open(MODEL, await backend(), { lookahead });
    try {
      const tokens: number[] = [];
      const r = await engine.generate({
        ...req,
        onToken: (id) => void (id >= 0 && tokens.push(id)),
      });
      out.push({ ids: r.tokens, streamed: tokens, finish: r.finishReason, text: r.text });
    } finally {
      engine.close();
    }
  }
  return out;
}

Deno.test({
  ignore: noGpu,
  name: "lookahead on webgpu: the same greedy generation as frame by frame, at any length",
  fn: async () => {
    for (const maxTokens of [1, 2, 17, 37]) {
      const [a, b] = await both(() => createWebGPUBackend(), {
        prompt: "Once upon a time",
        maxTokens,
        sampler: { temperature: 0 },
        stopAtEog: false,
      });
      assertEquals(b, a, `maxTokens ${maxTokens}`);
      assertEquals(a.ids.length, maxTokens);
      assertEquals(a.streamed, a.ids, "every token streamed once, in order");
    }
  },
});

Deno.test({
  ignore: noGpu,
  name: "lookahead on webgpu: an end-of-generation token or a stop inside a run ends it there",
  fn: async () => {
    const gpu = await createWebGPUBackend();
    const file = await openGGUF(MODEL);
    const stage = await LlamaStage.load(file, gpu);
    file.close();
    let rows = 0;
    // No time cap on runs: the counts below are exact (the cap has its own test).
    const host = new StageHost(stage, "m", {
      onStep: (info) => void (rows += info.rows),
      lookaheadMs: 1e9,
    });
    try {
      const link = new LocalStageLink("local", host);
      let n = 0;
      const run = (lookahead: number, req: Partial<HeadRequest>) =>
        new Head({ chain: () => Promise.resolve([link]) }, { lookahead }).generate({
          requestId: `r${n++}`,
          promptTokens: [1, 403, 407, 261],
          maxTokens: 40,
          sampling: { temperature: 0 },
          isEog: () => false,
          maxContext: 128,
          ...req,
        });
      const all = (await run(0, {})).tokens.map((t) => t.id);
      // The 7th token plays the end-of-generation token: the run of 16 decoded past it.
      const eog = all[6];
      const first = all.indexOf(eog);
      for (const lookahead of [0, 16]) {
        const r = await run(lookahead, { isEog: (id) => id === eog });
        assertEquals(r.finishReason, "stop");
        assertEquals(r.tokens.map((t) => t.id), all.slice(0, first + 1));
        // A stop string (onToken answering false) after the 10th token.
        const seen: number[] = [];
        const passes = host.passes;
        const rows0 = rows;
        const s = await run(lookahead, {
          onToken: (t, i) => {
            seen.push(t.id);
            return i < 9;
          },
        });
        assertEquals([s.finishReason, s.tokens.length], ["stopped", 10]);
        assertEquals(seen, all.slice(0, 10));
        // Frame by frame: the prompt and 9 tokens fed, 10 passes; ahead: the prompt's pass.
        // Ahead: the prompt's pass (none after the prompt: the first token is not held back),
        // the first token's pass and one run of 16 (rows in the stage's metrics: 4 + 1 + 16).
        assertEquals(host.passes - passes, lookahead ? 3 : 10);
        assertEquals(rows - rows0, lookahead ? 21 : 13);
      }
      assertEquals(host.openSessions, 0, "every session closed");
    } finally {
      host.dispose();
      gpu.dispose();
    }
  },
});

Deno.test({
  ignore: noGpu,
  name: "lookahead on webgpu: a stage decodes ahead only for plain greedy and when alone",
  fn: async () => {
    const gpu = await createWebGPUBackend();
    const file = await openGGUF(MODEL);
    const stage = await LlamaStage.load(file, gpu);
    file.close();
    const host = new StageHost(stage, "m", { lookaheadMs: 1e9 });
    try {
      const prompt = Int32Array.of(1, 403, 407, 261);
      host.open("plain", 64, { temperature: 0, topLogprobs: 2 });
      const r = await host.step("plain", { tokens: prompt, lookahead: 5 });
      assert(r.kind === "token" && r.more?.length === 5, "five tokens ahead");
      // Each carries its log-probability and alternatives, as a frame's own token does.
      for (const t of r.more!) assertEquals(t.top.length, 2);
      host.open("penalised", 64, { temperature: 0, repeatPenalty: 1.3 });
      const p = await host.step("penalised", { tokens: prompt, lookahead: 5 });
      assert(p.kind === "token" && p.more === undefined, "penalties need the host between tokens");
      // Two sessions' frames queued together: no run holds the other one up.
      host.open("x", 64, { temperature: 0 });
      host.open("y", 64, { temperature: 0 });
      const [x, y] = await Promise.all([
        host.step("x", { tokens: prompt, lookahead: 5 }),
        host.step("y", { tokens: prompt, lookahead: 5 }),
      ]);
      assert(x.kind === "token" && y.kind === "token");
      assert(!(x.more?.length && y.more?.length), "batched frames do not both decode ahead");
      // A stage whose runs may take no time decodes nothing ahead (a slow device's case).
      const capped = new StageHost(stage, "m", { lookaheadMs: 0 });
      capped.open("c", 64, { temperature: 0 });
      const c = await capped.step("c", { tokens: prompt, lookahead: 5 });
      assert(c.kind === "token" && c.more === undefined, "no time for a run");
      capped.closeAll();
    } finally {
      host.dispose();
      gpu.dispose();
    }
  },
});

Deno.test("lookahead: a backend without device candidates decodes frame by frame", async () => {
  const [a, b] = await both(() => Promise.resolve(createReferenceBackend()), {
    prompt: "Once upon a time",
    maxTokens: 9,
    sampler: { temperature: 0 },
    stopAtEog: false,
  });
  assertEquals(b, a);
  const host = new StageHost(
    await LlamaStage.load(await openGGUF(MODEL), createReferenceBackend()),
    "m",
  );
  try {
    host.open("s", 32, { temperature: 0 });
    const r = await host.step("s", { tokens: Int32Array.of(1, 403), lookahead: 8 });
    assert(r.kind === "token" && r.more === undefined);
  } finally {
    host.dispose();
  }
});
