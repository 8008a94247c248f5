/**
 * Streaming a stage's weights into a backend (Backend.beginUpload + GGUFFile.readTensorChunks)
 * gives exactly the weights a whole-tensor upload gives, on every backend, whatever the chunk
 * boundaries — and the writers refuse misuse with the weight's name.
 */
import type { Backend } from "../../kernels/backend.ts";
import { GGMLType } from "../../kernels/quant/types.ts";
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { createWasmBackend } from "../../kernels/wasm/mod.ts";
import { createWebGPUBackend } from "../../kernels/webgpu/mod.ts";
import { type GGUFFile, openGGUF } from "../../model/gguf/mod.ts";
import type { GGUFTensorInfo } from "../../model/gguf/types.ts";
import { LlamaStage, type TensorSource } from "../../model/llama.ts";
import { assert, assertThrows } from "../support/assert.ts";
import { FIXTURES } from "../support/paths.ts";
import { ignore as noGpu } from "../kernels/webgpu/helpers.ts";

/** The file as a source that can only hand out whole tensors (the `upload` path). */
function wholeTensors(f: GGUFFile): TensorSource {
  return {
    metadata: f.metadata,
    tensors: f.tensors,
    tensor: (n) => f.tensor(n),
    readTensor: (i) => f.readTensor(i),
  };
}

/** The file as a streaming source whose pieces are `window` bytes: odd sizes, many chunks. */
function smallChunks(f: GGUFFile, window: number, seen: { chunks: number }): TensorSource {
  return {
    ...wholeTensors(f),
    async *readTensorChunks(info: GGUFTensorInfo, scratch: Uint8Array) {
      for await (const c of f.readTensorChunks(info, scratch.subarray(0, window))) {
        seen.chunks++;
        yield c;
      }
    },
  };
}

async function logitsOf(src: TensorSource, be: Backend): Promise<Float32Array> {
  const stage = await LlamaStage.load(src, be, { maxBatch: 8 });
  try {
    const s = stage.newSession(32, "f32");
    let out = await stage.forward(s, { tokens: Int32Array.of(1, 17, 42, 99, 7) });
    out = await stage.forward(s, { tokens: Int32Array.of(3) });
    stage.endSession(s);
    if (!("logits" in out)) throw new Error("expected logits");
    return out.logits;
  } finally {
    stage.dispose();
  }
}

const backends: { name: string; make: () => Promise<Backend>; ignore?: boolean }[] = [
  { name: "reference", make: () => Promise.resolve(createReferenceBackend()) },
  { name: "wasm", make: () => createWasmBackend({ threads: 2 }) },
  // A tiny binding limit splits every weight into many GPU buffers, so chunks cross parts.
  { name: "webgpu", make: () => createWebGPUBackend({ maxBindingBytes: 4096 }), ignore: noGpu },
];

for (const model of ["tiny-q8_0.gguf", "tiny-f16.gguf", "kq-q4_k_m.gguf"]) {
  for (const b of backends) {
    Deno.test({
      name: `stream load: ${model} on ${b.name} in 777-byte chunks = whole-tensor upload`,
      ignore: b.ignore,
      fn: async () => {
        const f = await openGGUF(`${FIXTURES}/models/${model}`);
        const be = await b.make();
        try {
          const want = await logitsOf(wholeTensors(f), be);
          const seen = { chunks: 0 };
          const got = await logitsOf(smallChunks(f, 777, seen), be);
          assert(seen.chunks > f.tensors.length, `only ${seen.chunks} chunks: nothing was split`);
          assert(got.length === want.length, "logit count");
          for (let i = 0; i < want.length; i++) {
            assert(Object.is(got[i], want[i]), `logit ${i}: ${got[i]} vs ${want[i]}`);
          }
        } finally {
          be.dispose();
          f.close();
        }
      },
    });
  }
}

for (const b of backends) {
  Deno.test({
    name: `stream load: ${b.name} weight writers refuse overruns and use after finish/abort`,
    ignore: b.ignore,
    fn: async () => {
      const be = await b.make();
      try {
        const shape = { name: "blk.3.attn_q.weight", type: GGMLType.F32, shape: [8, 4] };
        const w = be.beginUpload(shape);
        assert(w.bytes === 128, `bytes ${w.bytes}`);
        const e = assertThrows(() => w.write(new Uint8Array(16), 120), Error);
        assert(e.message.includes("blk.3.attn_q.weight"), e.message);
        assertThrows(() => w.write(new Uint8Array(4), -4), Error);
        w.write(new Uint8Array(128), 0);
        w.finish();
        assertThrows(() => w.write(new Uint8Array(4), 0), Error);
        assertThrows(() => w.finish(), Error);
        const a = be.beginUpload(shape);
        a.abort();
        a.abort(); // idempotent
        assertThrows(() => a.write(new Uint8Array(4), 0), Error);
        const bad = assertThrows(() => be.upload({ ...shape, data: new Uint8Array(100) }), Error);
        assert(
          bad.message.includes("blk.3.attn_q.weight") || bad.message.includes("100"),
          bad.message,
        );
      } finally {
        be.dispose();
      }
    },
  });
}
