// Opening a multi-hundred-MB model reads only its front; readTensor reads only that tensor.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { GGMLType } from "../../../kernels/quant/types.ts";
import {
  type GGUFTensorHeader,
  GGUFValueType,
  meta,
  openGGUF,
  writeGGUFFile,
} from "../../../model/gguf/mod.ts";

Deno.test("a ~320 MB GGUF opens reading < 1 MB; readTensor reads just that tensor", async () => {
  const path = await Deno.makeTempFile({ suffix: ".gguf" });
  try {
    const big = 4096;
    const tensors: GGUFTensorHeader[] = [];
    for (let i = 0; i < 5; i++) {
      tensors.push({ name: `blk.${i}.w`, dims: [big, big], type: GGMLType.F32 });
      tensors.push({ name: `blk.${i}.norm`, dims: [big], type: GGMLType.F32 });
    }
    tensors.push({ name: "odd", dims: [7, 3], type: GGMLType.F16 }); // 42 bytes, then padding
    const vocab = Array.from({ length: 5000 }, (_, i) => `tok${i}`);

    // One reusable buffer per size: the writer holds at most one tensor at a time.
    const bigBuf = new Uint8Array(big * big * 4);
    const normBuf = new Uint8Array(big * 4);
    const data = async function* () {
      for (let i = 0; i < 5; i++) {
        bigBuf.fill(i + 1, 0, 16); // a marker at the start of each big tensor
        yield bigBuf;
        normBuf.fill(100 + i);
        yield normBuf;
      }
      yield Uint8Array.from({ length: 42 }, (_, i) => i);
    };
    const size = await writeGGUFFile(path, {
      metadata: [
        meta.string("general.architecture", "llama"),
        meta.array("tokenizer.ggml.tokens", GGUFValueType.STRING, vocab),
      ],
      tensors,
    }, data());
    assertEquals((await Deno.stat(path)).size, size);
    assert(size > 300e6, `only ${size} bytes`);

    const f = await openGGUF(path);
    try {
      assert(f.bytesRead < 1024 * 1024, `opening read ${f.bytesRead} bytes`);
      assertEquals(f.tensors.length, 11);
      assertEquals(f.metadata.stringArray("tokenizer.ggml.tokens")[4999], "tok4999");
      assertEquals(f.architecture, "llama");

      const before = f.bytesRead;
      const norm = await f.readTensor("blk.3.norm");
      assertEquals(f.bytesRead - before, big * 4);
      assert(norm.every((b) => b === 103));

      const w = await f.readTensor(f.tensor("blk.4.w")!);
      assertEquals(w.length, big * big * 4);
      assertEquals([...w.subarray(0, 17)], [...new Array(16).fill(5), 0]);
      assertEquals(f.bytesRead - before, big * 4 + big * big * 4);

      assertEquals([...(await f.readTensor("odd"))], Array.from({ length: 42 }, (_, i) => i));
      assertEquals(f.fileSize, f.tensorOffset("odd") + 64); // 42 bytes padded to 64
    } finally {
      f.close();
    }
  } finally {
    await Deno.remove(path);
  }
});
