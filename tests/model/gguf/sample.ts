/** Small GGUF files for the round-trip and fuzz tests: every value type, nested arrays, tensors. */
import { GGMLType } from "../../../kernels/quant/types.ts";
import { GGUFValueType, meta, writeGGUF } from "../../../model/gguf/mod.ts";

/** A valid ~1 KB v3 file touching every metadata value type and three tensor types. */
export function sampleGGUF(): Uint8Array {
  const data = (n: number, seed: number) =>
    Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 255);
  return writeGGUF({
    metadata: [
      meta.string("general.architecture", "llama"),
      meta.u32("llama.context_length", 2048),
      meta.u8("t.u8", 200),
      meta.i8("t.i8", -5),
      meta.u16("t.u16", 60000),
      meta.i16("t.i16", -30000),
      meta.i32("t.i32", -7),
      meta.f32("t.f32", 1.5),
      meta.bool("t.bool", true),
      meta.u64("t.u64", 1n << 40n),
      meta.i64("t.i64", -3n),
      meta.f64("t.f64", Math.PI),
      meta.array("tokenizer.ggml.tokens", GGUFValueType.STRING, ["<unk>", "<s>", "héllo", ""]),
      meta.array("t.scores", GGUFValueType.FLOAT32, [0.5, -1, 2]),
      meta.array("t.flags", GGUFValueType.BOOL, [true, false]),
      {
        key: "t.nested",
        type: GGUFValueType.ARRAY,
        value: {
          itemType: GGUFValueType.ARRAY,
          values: [
            { itemType: GGUFValueType.UINT16, values: Uint16Array.of(1, 2) },
            { itemType: GGUFValueType.STRING, values: ["a"] },
          ],
        },
      },
    ],
    tensors: [
      { name: "a.weight", dims: [4, 2], type: GGMLType.F32, data: data(32, 1) },
      { name: "b.weight", dims: [32], type: GGMLType.Q8_0, data: data(34, 2) },
      { name: "c.weight", dims: [3], type: GGMLType.F16, data: data(6, 3) },
    ],
  });
}
