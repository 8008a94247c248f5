/**
 * wasm32 memories stop at 4 GiB, so the backend spreads weights over several memories. With an
 * artificial cap of a few hundred KiB to 2 MiB per memory a real model needs several of them; its
 * logits must be bit-identical to the uncapped backend's (same kernels, only placement differs).
 */
import type { Backend } from "../../../kernels/backend.ts";
import { GGMLType } from "../../../kernels/quant/types.ts";
import { createWasmBackend } from "../../../kernels/wasm/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import { FIXTURES } from "../../support/paths.ts";
import { assertClose } from "./helpers.ts";
import { assert, assertEquals } from "../../support/assert.ts";

async function logits(model: string, backend: Backend, tokens: number[]): Promise<Float32Array[]> {
  const file = await openGGUF(`${FIXTURES}/models/${model}`);
  try {
    const stage = await LlamaStage.load(file, backend, { maxBatch: 8 });
    const session = stage.newSession(64, "f32");
    const outs: Float32Array[] = [];
    let out = await stage.forward(session, { tokens: Int32Array.from(tokens) });
    for (let i = 0; i < 3; i++) {
      if (!("logits" in out)) throw new Error("expected logits");
      outs.push(out.logits.slice());
      out = await stage.forward(session, { tokens: Int32Array.of(tokens[i]) });
    }
    stage.endSession(session);
    return outs;
  } finally {
    file.close();
  }
}

const CASES: [string, number][] = [
  ["kq-f32.gguf", 2 << 20],
  ["kq-q4_k_m.gguf", 1 << 20],
  ["tiny-q8_0.gguf", 256 << 10],
];

for (const [model, cap] of CASES) {
  Deno.test(`wasm memory cap: ${model} over ${cap >> 10} KiB memories matches one memory`, async () => {
    const tokens = [1, 17, 42, 99, 5, 250];
    const big = await createWasmBackend({ threads: 2 });
    const small = await createWasmBackend({ threads: 2, memoryCap: cap });
    try {
      const want = await logits(model, big, tokens);
      const got = await logits(model, small, tokens);
      if (!/[2-9] memories/.test(small.device)) {
        throw new Error(`expected several memories, device says: ${small.device}`);
      }
      for (let i = 0; i < want.length; i++) assertClose(got[i], want[i], 0, `${model} step ${i}`);
    } finally {
      big.dispose();
      small.dispose();
    }
  });
}

Deno.test("a memory grow the OS refuses is 'no room', never a scratch block over live data", async () => {
  const be = await createWasmBackend({ threads: 1 });
  const p = { nHeads: 1, headDim: 64, ropeDim: 64, freqBase: 10000, freqScale: 1, neox: false };
  const grow = WebAssembly.Memory.prototype.grow;
  try {
    const small = be.buffer(64);
    be.rope(small, Int32Array.of(0), p); // a small rope scratch block
    const rows = 100_000;
    const big = be.buffer(rows * 64);
    WebAssembly.Memory.prototype.grow = function () {
      throw new RangeError("WebAssembly.Memory.grow(): Unable to grow instance memory");
    };
    let threw = false;
    try {
      be.rope(big, new Int32Array(rows), p);
    } catch {
      threw = true;
    }
    WebAssembly.Memory.prototype.grow = grow;
    assert(threw, "the big rope needed the grow that was refused");
    // A new buffer may take the block the scratch released; the next small rope must not
    // write its scratch there (before, it reused its stale offset and overwrote the buffer).
    const victim = be.buffer(64);
    be.write(victim, new Float32Array(64).fill(1));
    be.rope(small, Int32Array.of(5), p);
    assertEquals(Array.from((await be.read(victim)).slice(0, 4)), [1, 1, 1, 1]);
  } finally {
    WebAssembly.Memory.prototype.grow = grow;
    be.dispose();
  }
});

Deno.test("a worker that fails after start is noticed: the next call says so at once", async () => {
  const workers: Worker[] = [];
  const RealWorker = globalThis.Worker;
  globalThis.Worker = class extends RealWorker {
    constructor(url: string | URL, opts?: WorkerOptions) {
      super(url, opts);
      workers.push(this);
    }
  } as typeof Worker;
  let be;
  try {
    be = await createWasmBackend({ threads: 2, memoryCap: 8 << 20 });
  } finally {
    globalThis.Worker = RealWorker;
  }
  try {
    assertEquals(workers.length, 1, "two threads: the caller and one worker");
    // A message the worker fails on stands in for its kernels failing to instantiate.
    workers[0].postMessage({ type: "arena", memory: null });
    await new Promise((r) => setTimeout(r, 500));
    const t0 = performance.now();
    let err: Error | undefined;
    try {
      // 6 MiB does not fit the first 8 MiB memory beside its reserve: a new memory is opened
      // and handed to the worker. Before, that waited 30 s for its answer.
      be.upload({
        name: "w",
        type: GGMLType.F32,
        shape: [1024, 1536],
        data: new Uint8Array(1024 * 1536 * 4),
      });
    } catch (e) {
      err = e as Error;
    }
    assert(err?.message.includes("a worker failed to take a new memory"), `${err}`);
    assert(performance.now() - t0 < 5000, "it waited for the dead worker");
  } finally {
    be.dispose();
  }
});
