/**
 * The newer architectures' goldens (MANIFEST-arch.json: qwen3, qwen3moe, gemma3, phi3) are all
 * among the goldens every backend's golden test runs (tests/model, tests/kernels/{wasm,webgpu}),
 * and each names a model of the architecture its file name says.
 */
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import { LlamaStage } from "../../model/llama.ts";
import { configFromFile } from "../../model/config.ts";
import { goldenFiles } from "../support/golden.ts";
import { FIXTURES } from "../support/paths.ts";
import { assert, assertEquals } from "../support/assert.ts";

const manifest = JSON.parse(await Deno.readTextFile(`${FIXTURES}/MANIFEST-arch.json`)) as {
  golden: string[];
  models: Record<string, { arch: string }>;
};

Deno.test("every newer-architecture golden is run by the golden tests", () => {
  const run = new Set(goldenFiles());
  const listed = manifest.golden.map((g) => g.replace(/^golden\//, ""));
  assertEquals(listed.length, 27);
  for (const g of listed) assert(run.has(g), `${g} is not among the goldens the tests run`);
});

Deno.test("each newer-architecture model reads as its architecture", async () => {
  for (const [name, m] of Object.entries(manifest.models)) {
    const file = await openGGUF(`${FIXTURES}/models/${name}`);
    try {
      const c = configFromFile(file);
      assertEquals(c.arch, m.arch, name);
      if (m.arch === "qwen3moe") assertEquals([c.nExperts, c.nExpertsUsed], [4, 2]);
      if (m.arch === "gemma3") assertEquals([c.slidingWindow, c.slidingPattern], [16, 3]);
    } finally {
      file.close();
    }
  }
});

Deno.test("newer architectures split into stages give the whole model's logits bit for bit", async () => {
  const be = createReferenceBackend();
  const tokens = Int32Array.from({ length: 30 }, (_, i) => (i * 37 + 1) % 300);
  for (const name of ["qwen3-q8_0", "qwen3moe-q4_0", "gemma3-q8_0", "phi3-q4_0"]) {
    const file = await openGGUF(`${FIXTURES}/models/${name}.gguf`);
    try {
      const whole = await LlamaStage.load(file, be, { maxBatch: 16 });
      const n = whole.config.nLayers;
      const ws = whole.newSession(64);
      const want = await whole.forward(ws, { tokens });
      // gemma3 [0, 2) + [2, 3): the tail's layer 2 must stay global (indices are the model's)
      for (let cut = 1; cut < n; cut++) {
        const head = await LlamaStage.load(file, be, { to: cut, maxBatch: 16 });
        const tail = await LlamaStage.load(file, be, { from: cut, maxBatch: 16 });
        const mid = await head.forward(head.newSession(64), { tokens });
        assert("hidden" in mid);
        const got = await tail.forward(tail.newSession(64), {
          hidden: mid.hidden,
          nTokens: tokens.length,
        });
        assert("logits" in got && "logits" in want);
        assertEquals(Array.from(got.logits), Array.from(want.logits), `${name} cut at ${cut}`);
      }
    } finally {
      file.close();
    }
  }
});
