/**
 * Continuous batching in a StageHost: concurrent requests share forward passes, and each one
 * produces exactly what it produces alone.
 */
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import {
  Head,
  LocalStageLink,
  StageHost,
  StageSessionError,
} from "../../../cluster/pipeline/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";

async function host(from: number, to: number, maxBatch = 64) {
  const file = await openGGUF(`${FIXTURES}/models/stories260K.gguf`);
  const h = new StageHost(
    await LlamaStage.load(file, createReferenceBackend(), { from, to, maxBatch }),
    "s",
    {
      defaultContext: 128,
    },
  );
  file.close();
  return h;
}

const prompts = Array.from({ length: 12 }, (_, i) => [1, 300 + i, 400 + (i * 7) % 100, 20 + i]);

async function run(stages: StageHost[], concurrent: boolean) {
  const links: LocalStageLink[] = stages.map((h, i) =>
    new LocalStageLink(`n${i}`, h, { linkTo: (hop) => links[Number(hop.nodeId.slice(1))] })
  );
  const head = new Head({ chain: () => Promise.resolve(links) });
  const one = (p: number[], i: number) =>
    head.generate({
      requestId: `r${i}`,
      promptTokens: p,
      maxTokens: 12,
      sampling: { temperature: i % 2 ? 0 : 0.9, seed: 100 + i, topK: 0, topP: 1, minP: 0 },
      isEog: () => false,
      maxContext: 128,
    }).then((r) => r.tokens.map((t) => t.id));
  if (concurrent) return Promise.all(prompts.map(one));
  const out: number[][] = [];
  for (const [i, p] of prompts.entries()) out.push(await one(p, i));
  return out;
}

Deno.test("12 concurrent requests over 2 stages: same tokens as alone, fewer forward passes", async () => {
  const solo = await run([await host(0, 3), await host(3, 5)], false);
  const stages = [await host(0, 3), await host(3, 5)];
  const together = await run(stages, true);
  assertEquals(together, solo);
  for (const s of stages) {
    assert(s.passes < s.steps / 2, `stage batched ${s.steps} frames into ${s.passes} passes`);
    assertEquals(s.openSessions, 0);
  }
});

Deno.test("a batch respects maxBatch rows and still serves every frame", async () => {
  const stage = await host(0, 5, 8); // prompts of 4 rows: at most 2 per pass
  const together = await run([stage], true);
  const solo = await run([await host(0, 5, 8)], false);
  assertEquals(together, solo);
});

Deno.test("a bad frame in a batch fails alone", async () => {
  const h = await host(0, 5);
  h.open("good", 64);
  h.open("bad", 64);
  const good = h.step("good", { tokens: Int32Array.of(1, 2, 3) });
  const bad = h.step("bad", { tokens: Int32Array.of(1, 99999) });
  // Handled at once: the host yields to the event loop between passes, and a rejection left
  // unhandled across a tick fails the test run.
  const missing = h.step("nope", { tokens: Int32Array.of(1) }).then(() => undefined, (e) => e);
  assertEquals((await good).kind, "logits");
  let badError = "";
  await bad.catch((e) => (badError = String(e)));
  assert(badError.includes("outside the vocabulary"), badError);
  const missingError = await missing;
  assert(missingError instanceof StageSessionError, String(missingError));
});

Deno.test("memoryBytes: the stage's weight bytes and each open session's KV cache bytes", async () => {
  const h = await host(0, 5);
  const { weights } = h.memoryBytes;
  assertEquals(weights, h.stage.weightBytes);
  assert(weights > 900_000, `stories260K weighs ${weights} bytes`);
  assertEquals(h.memoryBytes.kvCache, 0);
  h.open("a", 64);
  h.open("b"); // default context (128)
  const cfg = h.stage.config;
  const perPos = 2 * 5 * cfg.nKVHeads * cfg.headDim * 4; // K and V, 5 layers, f32
  assertEquals(h.memoryBytes.kvCache, perPos * (64 + 128));
  h.close("a");
  assertEquals(h.memoryBytes.kvCache, perPos * 128);
  h.close("b");
  assertEquals(h.memoryBytes, { weights, kvCache: 0 });
});

Deno.test("a generation served in-process lets sockets through between passes", async () => {
  // Before EventLoopYield, passes were chained by microtasks and setImmediate, which Deno runs
  // before polling I/O: a local HTTP request waited for the whole generation.
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("ok"),
  );
  try {
    const h = await host(0, 5);
    // Each pass computes for at least 2 ms, as a real model's would (stories260K's take ~0.2 ms:
    // on a loaded machine the whole generation could end before a fetch's round trip; at 1 ms
    // and 120 tokens it did once in a full suite run on this 2-core machine).
    const batch = h.stage.forwardBatch.bind(h.stage);
    h.stage.forwardBatch = (items) => {
      const t = performance.now();
      while (performance.now() - t < 2) { /* compute */ }
      return batch(items);
    };
    const head = new Head({ chain: () => Promise.resolve([new LocalStageLink("n0", h)]) });
    let produced = 0;
    let answeredAt = -1;
    let fetched: Promise<void> | undefined;
    const total = 200;
    await head.generate({
      requestId: "long",
      promptTokens: [1, 300, 400],
      maxTokens: total,
      sampling: { temperature: 0, seed: 1, topK: 0, topP: 1, minP: 0 },
      isEog: () => false,
      maxContext: 256,
      onToken: () => {
        produced++;
        // Ask once generation is under way; the answer must come before it ends.
        fetched ??= fetch(`http://127.0.0.1:${server.addr.port}/`)
          .then((r) => r.text())
          .then(() => void (answeredAt = produced));
      },
    });
    await fetched;
    assert(answeredAt > 0 && answeredAt < total, `answered after ${answeredAt}/${total} tokens`);
  } finally {
    await server.shutdown();
  }
});

Deno.test("dispose() during a pass frees the weights once the pass has ended", async () => {
  // Undeploying mid-generation disposed the stage under a running pass (it yields between
  // layers): on a GPU the freed buffers failed the pass as a lost device.
  const h = await host(0, 5, 8);
  const order: string[] = [];
  const dispose = h.stage.dispose.bind(h.stage);
  h.stage.dispose = () => {
    order.push("weights freed");
    dispose();
  };
  // The stage is dropped after the pass's first 8-row chunk, with 7 to go.
  const batch = h.stage.forwardBatch.bind(h.stage);
  let chunks = 0;
  h.stage.forwardBatch = async (items) => {
    const out = await batch(items);
    if (++chunks === 1) h.dispose();
    return out;
  };
  h.open("s");
  const prompt = Int32Array.from({ length: 64 }, (_, i) => 1 + i);
  await h.step("s", { tokens: prompt }).then(
    () => order.push("pass ended"),
    () => order.push("pass ended"),
  );
  await new Promise((r) => setTimeout(r, 0));
  assertEquals(order, ["pass ended", "weights freed"]);
  assertEquals(h.openSessions, 0);
});

Deno.test("a pass that fails after its rows reached the KV caches runs none of them again", async () => {
  // Retrying each frame alone is for frames the pass refused up front; after the layers ran,
  // a second run would store the rows again at shifted positions.
  const h = await host(0, 5);
  const batch = h.stage.forwardBatch.bind(h.stage);
  let calls = 0;
  h.stage.forwardBatch = async (items) => {
    calls++;
    const out = await batch(items);
    if (items.length > 1) throw new Error("the output read failed");
    return out;
  };
  h.open("a", 64);
  h.open("b", 64);
  const a = h.step("a", { tokens: Int32Array.of(1, 2, 3) }).then(() => "ok", (e) => String(e));
  const b = h.step("b", { tokens: Int32Array.of(1, 5) }).then(() => "ok", (e) => String(e));
  assertEquals(await Promise.all([a, b]), [
    "Error: the output read failed",
    "Error: the output read failed",
  ]);
  assertEquals(calls, 1);
});
