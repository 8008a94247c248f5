/**
 * The prefix KV cache (model/prefix_cache.ts): a session started from cached blocks computes
 * bit-identical logits to one that ran the whole prompt, on every backend and across a split
 * into stages; blocks are shared by concurrent sessions; the byte budget holds.
 */
import type { Backend } from "../../kernels/backend.ts";
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { createWasmBackend } from "../../kernels/wasm/mod.ts";
import { createWebGPUBackend } from "../../kernels/webgpu/mod.ts";
import { type GGUFFile, openGGUF } from "../../model/gguf/mod.ts";
import { LlamaStage, type Session, type StageOutput } from "../../model/llama.ts";
import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { FIXTURES } from "../support/paths.ts";
import { ignore as noGpu } from "../kernels/webgpu/helpers.ts";

const backends: { name: string; make: () => Promise<Backend>; ignore?: boolean }[] = [
  { name: "reference", make: () => Promise.resolve(createReferenceBackend()) },
  { name: "wasm", make: () => createWasmBackend({ threads: 2 }) },
  { name: "webgpu", make: () => createWebGPUBackend(), ignore: noGpu },
];

/** Deterministic token ids below `vocab`. */
function ids(n: number, seed: number, vocab: number): number[] {
  const out: number[] = [];
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    out.push(1 + (s >>> 8) % (vocab - 1));
  }
  return out;
}

function logits(out: StageOutput): Float32Array {
  if (!("logits" in out)) throw new Error("expected logits");
  return out.logits;
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

function assertSameBits(got: Float32Array, want: Float32Array, what: string): void {
  assertEquals(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    assert(Object.is(got[i], want[i]), `${what}: logit ${i} is ${got[i]}, uncached ${want[i]}`);
  }
}

/** Prompt + 6 greedy steps on a session; every step's logits. */
async function run(
  stage: LlamaStage,
  session: Session,
  prompt: number[],
  fromCache: boolean,
): Promise<{ restored: number; steps: Float32Array[] }> {
  const restored = fromCache ? stage.restorePrefix(session, prompt) : 0;
  const rest = prompt.slice(restored);
  const steps = [logits(await stage.forward(session, { tokens: Int32Array.from(rest) }))];
  for (let i = 0; i < 6; i++) {
    const next = argmax(steps[steps.length - 1]);
    steps.push(logits(await stage.forward(session, { tokens: Int32Array.of(next) })));
  }
  return { restored, steps };
}

async function withStage(
  be: Backend,
  model: string,
  opts: { maxBatch?: number; from?: number; to?: number },
  f: (stage: LlamaStage, file: GGUFFile) => Promise<void>,
): Promise<void> {
  const file = await openGGUF(`${FIXTURES}/models/${model}`);
  const stage = await LlamaStage.load(file, be, { maxBatch: opts.maxBatch ?? 64, ...opts });
  try {
    await f(stage, file);
  } finally {
    stage.dispose();
    file.close();
  }
}

for (const b of backends) {
  for (const model of ["tiny-q8_0.gguf", "qwen3-q8_0.gguf"]) {
    Deno.test({
      name: `prefix cache: ${model} on ${b.name} gives the uncached logits bit for bit`,
      ignore: b.ignore,
      fn: async () => {
        const be = await b.make();
        try {
          // maxBatch 24 with 16-token blocks: prompts run in chunks that split blocks.
          await withStage(be, model, { maxBatch: 24 }, async (stage) => {
            const V = stage.config.nVocab;
            const cache = stage.enablePrefixCache(64 << 20, 16);
            const shared = ids(40, 7, V);
            const a = [...shared, ...ids(13, 8, V)];
            const bPrompt = [...shared, ...ids(9, 9, V)];
            // uncached truth for prompt b
            const s0 = stage.newSession(128);
            const want = await run(stage, s0, bPrompt, false);
            stage.endSession(s0);
            // a fills the cache (its first 48 tokens: 3 blocks); b then starts from 2 of them
            const s1 = stage.newSession(128);
            const first = await run(stage, s1, a, true);
            assertEquals(first.restored, 0, "nothing cached yet");
            stage.endSession(s1);
            assert(cache.stats().blocks >= 3, `blocks after a: ${cache.stats().blocks}`);
            const s2 = stage.newSession(128);
            const got = await run(stage, s2, bPrompt, true);
            stage.endSession(s2);
            assertEquals(got.restored, 32, "b shares 40 tokens with a: 2 full blocks");
            for (let i = 0; i < want.steps.length; i++) {
              assertSameBits(got.steps[i], want.steps[i], `step ${i}`);
            }
            // the same prompt again restores everything but its last token's block remainder
            const s3 = stage.newSession(128);
            const again = await run(stage, s3, bPrompt, true);
            stage.endSession(s3);
            assertEquals(again.restored, 48, "b's own blocks were cached by its first run");
            assertSameBits(again.steps[6], want.steps[6], "repeat, last step");
            assert(cache.stats().hitTokens === 80, `hit tokens ${cache.stats().hitTokens}`);
          });
        } finally {
          be.dispose();
        }
      },
    });
  }
}

Deno.test("prefix cache: concurrent sessions share blocks in one batch", async () => {
  const be = await createWasmBackend({ threads: 2 });
  try {
    await withStage(be, "tiny-q8_0.gguf", {}, async (stage) => {
      const V = stage.config.nVocab;
      stage.enablePrefixCache(64 << 20, 16);
      const system = ids(33, 3, V);
      const seed = stage.newSession(128);
      await run(stage, seed, system, true);
      stage.endSession(seed);
      const prompts = [1, 2, 3].map((k) => [...system, ...ids(5 + k, 10 + k, V)]);
      const want: Float32Array[] = [];
      for (const p of prompts) {
        const s = stage.newSession(128);
        want.push(logits(await stage.forward(s, { tokens: Int32Array.from(p) })));
        stage.endSession(s);
      }
      const sessions = prompts.map(() => stage.newSession(128));
      const restored = sessions.map((s, i) => stage.restorePrefix(s, prompts[i]));
      assertEquals(restored, [32, 32, 32]);
      const outs = await stage.forwardBatch(
        sessions.map((s, i) => ({
          session: s,
          input: { tokens: Int32Array.from(prompts[i].slice(32)) },
        })),
      );
      outs.forEach((o, i) => assertSameBits(logits(o), want[i], `session ${i}`));
      for (const s of sessions) stage.endSession(s);
    });
  } finally {
    be.dispose();
  }
});

Deno.test("prefix cache: a stage after the first caches by the ids it is given", async () => {
  const be = await createWasmBackend({ threads: 2 });
  try {
    const file = await openGGUF(`${FIXTURES}/models/tiny-q8_0.gguf`);
    const n = Number(file.metadata.get("llama.block_count"));
    const head = await LlamaStage.load(file, be, { maxBatch: 64, to: 1 });
    const tail = await LlamaStage.load(file, be, { maxBatch: 64, from: 1, to: n });
    try {
      const V = tail.config.nVocab;
      head.enablePrefixCache(64 << 20, 16);
      tail.enablePrefixCache(64 << 20, 16);
      const prompt = ids(37, 5, V);
      const through = async (cached: boolean) => {
        const hs = head.newSession(64);
        const ts = tail.newSession(64);
        const r1 = cached ? head.restorePrefix(hs, prompt) : 0;
        const r2 = cached ? tail.restorePrefix(ts, prompt) : 0;
        assertEquals(r1, r2, "both stages hold the same blocks");
        const rest = prompt.slice(r1);
        const h = await head.forward(hs, { tokens: Int32Array.from(rest) });
        if (!("hidden" in h)) throw new Error("expected hidden states");
        const out = await tail.forward(ts, { hidden: h.hidden, nTokens: rest.length }, rest);
        head.endSession(hs);
        tail.endSession(ts);
        return { restored: r1, logits: logits(out) };
      };
      const want = await through(false);
      const fill = await through(true);
      assertEquals(fill.restored, 0);
      const got = await through(true);
      assertEquals(got.restored, 32);
      assertSameBits(got.logits, want.logits, "two stages");
    } finally {
      head.dispose();
      tail.dispose();
      file.close();
    }
  } finally {
    be.dispose();
  }
});

Deno.test("prefix cache: the byte budget holds and least recently used leaves go first", async () => {
  const be = createReferenceBackend();
  await withStage(be, "tiny-q8_0.gguf", {}, async (stage) => {
    const V = stage.config.nVocab;
    const probe = stage.enablePrefixCache(0, 8);
    assert(!probe.enabled, "a budget below one block keeps nothing");
    const budget = 5 * probe.blockBytes;
    const cache = stage.enablePrefixCache(budget, 8);
    const prompts = [0, 1, 2, 3, 4, 5].map((k) => ids(25, 100 + k, V)); // 3 blocks each
    for (const p of prompts) {
      const s = stage.newSession(64);
      stage.restorePrefix(s, p);
      await stage.forward(s, { tokens: Int32Array.from(p) });
      stage.endSession(s);
      assert(cache.stats().bytes <= budget, `${cache.stats().bytes} bytes > budget ${budget}`);
    }
    assert(cache.stats().evictions > 0, "six 3-block prompts cannot fit 5 blocks");
    // the last prompt is the most recent: its blocks are the ones still there
    const s = stage.newSession(64);
    assertEquals(stage.restorePrefix(s, prompts[5]), 24);
    stage.endSession(s);
    const old = stage.newSession(64);
    assertEquals(stage.restorePrefix(old, prompts[0]), 0, "the oldest prompt was evicted");
    stage.endSession(old);
  });
});

Deno.test("prefix cache: a block whose children were all evicted becomes a leaf to evict; a shared block stays", async () => {
  const be = createReferenceBackend();
  await withStage(be, "tiny-q8_0.gguf", {}, async (stage) => {
    const V = stage.config.nVocab;
    const probe = stage.enablePrefixCache(0, 8);
    const cache = stage.enablePrefixCache(6 * probe.blockBytes, 8);
    const serve = async (p: number[]) => {
      const s = stage.newSession(64);
      const restored = stage.restorePrefix(s, p);
      await stage.forward(s, { tokens: Int32Array.from(p.slice(restored)) });
      stage.endSession(s);
    };
    const restorable = (p: number[]) => {
      const s = stage.newSession(64);
      const n = stage.restorePrefix(s, p);
      stage.endSession(s);
      return n;
    };
    const a = ids(25, 7, V); // blocks A1 A2 A3
    const b = [...a.slice(0, 8), ...ids(17, 8, V)]; // A1 B2 B3: shares A1
    await serve(a);
    await serve(b);
    assertEquals(cache.stats().blocks, 5);
    assertEquals(restorable(a), 24); // A's path is now the most recent
    // C1 C2 C3 (24 tokens: no fourth block started): two evictions, B3, then B2, a leaf once
    // B3 went and older than A3.
    await serve(ids(24, 9, V));
    assertEquals(cache.stats().evictions, 2);
    assertEquals(restorable(b), 8, "B's own blocks went, the block it shares with A stayed");
    assertEquals(restorable(a), 24);
    assertEquals(restorable(ids(25, 9, V).slice(0, 24).concat([5])), 24);
  });
});

Deno.test("prefix cache: positions a chain gives back are not counted as restored, cut inside a block or not", async () => {
  const be = createReferenceBackend();
  await withStage(be, "tiny-q8_0.gguf", {}, async (stage) => {
    const V = stage.config.nVocab;
    const cache = stage.enablePrefixCache(1 << 20, 8);
    const p = ids(25, 11, V);
    const first = stage.newSession(64);
    stage.restorePrefix(first, p);
    await stage.forward(first, { tokens: Int32Array.from(p) });
    stage.endSession(first);
    const hits = () => cache.stats().hitTokens;
    for (const keep of [16, 12]) {
      const before = hits();
      const s = stage.newSession(64);
      assertEquals(stage.restorePrefix(s, p), 24);
      stage.keepPrefix(s, keep); // the chain restored only `keep` elsewhere
      // Before, a cut inside a block (12) left all 24 counted.
      assertEquals(hits() - before, keep, `keep ${keep}`);
      stage.endSession(s);
    }
  });
});

Deno.test("prefix cache: a session still capturing after clear() hangs nothing under the freed blocks", async () => {
  const be = createReferenceBackend();
  await withStage(be, "tiny-q8_0.gguf", {}, async (stage) => {
    const V = stage.config.nVocab;
    const cache = stage.enablePrefixCache(1 << 20, 8);
    const p = ids(24, 13, V);
    const s = stage.newSession(64);
    stage.restorePrefix(s, p);
    await stage.forward(s, { tokens: Int32Array.from(p.slice(0, 8)) });
    assertEquals(cache.stats().blocks, 1);
    cache.clear();
    await stage.forward(s, { tokens: Int32Array.from(p.slice(8, 16)) });
    // Before, the next block hung under the freed one: counted, unreachable, freed twice later.
    assertEquals(cache.stats().blocks, 0);
    stage.endSession(s);
  });
});

Deno.test("prefix cache: restore wants a fresh session", async () => {
  const be = createReferenceBackend();
  await withStage(be, "tiny-q8_0.gguf", {}, async (stage) => {
    stage.enablePrefixCache(1 << 20, 8);
    const s = stage.newSession(32);
    await stage.forward(s, { tokens: Int32Array.of(1, 2) });
    assertThrows(() => stage.restorePrefix(s, [1, 2, 3]), Error, "fresh session");
    stage.endSession(s);
  });
});

/** `inner` with the bytes of its live buffers counted (peak too), and buffer() failing on demand. */
function countingBackend(inner: Backend) {
  const live = new Map<object, number>();
  const count = { bytes: 0, peak: 0, failBuffers: false };
  const be = new Proxy(inner, {
    get(t, p, r) {
      const v = Reflect.get(t, p, r);
      if (p === "buffer") {
        return (n: number) => {
          if (count.failBuffers) throw new Error("test: no room for a buffer");
          const b = inner.buffer(n);
          live.set(b, 4 * n);
          count.bytes += 4 * n;
          count.peak = Math.max(count.peak, count.bytes);
          return b;
        };
      }
      if (p === "free") {
        return (h: object) => {
          const n = live.get(h);
          if (n !== undefined) count.bytes -= n;
          live.delete(h);
          return inner.free(h as never);
        };
      }
      return typeof v === "function" ? v.bind(t) : v;
    },
  }) as Backend;
  return { be, count };
}

Deno.test("prefix cache: blocks being filled count in the budget; no room or no memory only stops capturing", async () => {
  const { be, count } = countingBackend(createReferenceBackend());
  await withStage(be, "tiny-q8_0.gguf", { maxBatch: 512 }, async (stage) => {
    const V = stage.config.nVocab;
    const blockBytes = stage.enablePrefixCache(0, 16).blockBytes;
    const budget = 4 * blockBytes;
    const cache = stage.enablePrefixCache(budget, 16);
    // 8 sessions with 40-token prompts (3 blocks each under way) in one batched pass: before,
    // every session's blocks were allocated outside the budget, 24 blocks at the peak.
    const base = count.bytes;
    count.peak = base;
    const prompts = [0, 1, 2, 3, 4, 5, 6, 7].map((k) => ids(40, 200 + k, V));
    const sessions = prompts.map(() => stage.newSession(64));
    sessions.forEach((s, i) => stage.restorePrefix(s, prompts[i]));
    const batched = await stage.forwardBatch(
      sessions.map((s, i) => ({ session: s, input: { tokens: Int32Array.from(prompts[i]) } })),
    );
    assert(count.peak - base <= budget, `peak ${count.peak - base} B > budget ${budget} B`);
    assert(cache.stats().bytes <= budget && count.bytes - base === cache.stats().bytes);
    assert(cache.stats().blocks > 0, "some blocks were cached");
    // Sessions that were not captured computed the same logits as alone, without a cache.
    for (const [i, s] of sessions.entries()) {
      const alone = stage.newSession(64);
      const want = logits(await stage.forward(alone, { tokens: Int32Array.from(prompts[i]) }));
      stage.endSession(alone);
      assertSameBits(logits(batched[i]), want, `session ${i}`);
      stage.endSession(s);
    }
    // A backend out of memory fails the cache's allocation, not the pass (before, every
    // session of the pass failed with the backend's error).
    count.failBuffers = true;
    const s = stage.newSession(64);
    stage.restorePrefix(s, ids(40, 999, V));
    const out = logits(await stage.forward(s, { tokens: Int32Array.from(ids(40, 999, V)) }));
    assertEquals(out.length, V);
    stage.endSession(s);
    count.failBuffers = false;
  });
});
