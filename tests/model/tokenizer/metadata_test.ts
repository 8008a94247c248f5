/** Loading rules: llama.cpp's defaults for absent keys, and clear errors. */
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";
import { type GGUFValue, GGUFValueType } from "../../../model/gguf/mod.ts";
import { tokenizerFromMetadata } from "../../../model/tokenizer/mod.ts";

const strings = (values: string[]): GGUFValue => ({ itemType: GGUFValueType.STRING, values });
const md = (o: Record<string, GGUFValue>) => new Map(Object.entries(o));

// A tiny SPM vocabulary: <unk> <s> </s>, two bytes, then pieces with scores.
function spm(extra: Record<string, GGUFValue> = {}) {
  return md({
    "tokenizer.ggml.model": "llama",
    "tokenizer.ggml.tokens": strings([
      "<unk>",
      "<s>",
      "</s>",
      "<0x61>",
      "<0x62>",
      "▁",
      "a",
      "b",
      "ab",
      "▁ab",
    ]),
    "tokenizer.ggml.scores": {
      itemType: GGUFValueType.FLOAT32,
      values: new Float32Array([0, 0, 0, 0, 0, -5, -1, -1, -2, -3]),
    },
    "tokenizer.ggml.token_type": {
      itemType: GGUFValueType.INT32,
      values: new Int32Array([2, 3, 3, 6, 6, 1, 1, 1, 1, 1]),
    },
    ...extra,
  });
}

Deno.test("SPM defaults without keys: bos 1, eos 2, unk 0, add_bos, space prefix", () => {
  const t = tokenizerFromMetadata(spm());
  assertEquals([t.model, t.pre, t.bos, t.eos, t.unk, t.addBos, t.addEos, t.addSpacePrefix], [
    "llama",
    "default",
    1,
    2,
    0,
    true,
    false,
    true,
  ]);
  assertEquals(t.encode("ab"), [1, 9]); // "▁ab" by merges
  assertEquals(t.encode("ab", { addBos: false }), [9]);
  assertEquals(t.decode([1, 9]), " ab");
  assertEquals(t.decode([9]), "ab");
});

Deno.test("SPM: add_space_prefix=false and add_bos_token=false are honoured", () => {
  const t = tokenizerFromMetadata(spm({
    "tokenizer.ggml.add_space_prefix": false,
    "tokenizer.ggml.add_bos_token": false,
  }));
  assertEquals(t.encode("ab"), [8]);
  assertEquals(t.encode("ba"), [7, 6]);
});

Deno.test("SPM byte fallback and <unk> for bytes without a token", () => {
  const t = tokenizerFromMetadata(spm());
  // "c" has no piece and no <0x63>: llama.cpp would fail here; we emit <unk>.
  assertEquals(t.encode("c", { addBos: false }), [5, 0]);
});

function bpe(pre: string | undefined) {
  const o: Record<string, GGUFValue> = {
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.tokens": strings(["a", "b", "ab", "Ġ", "Ġab", "<|endoftext|>"]),
    "tokenizer.ggml.merges": strings(["a b", "Ġ ab"]),
  };
  if (pre !== undefined) o["tokenizer.ggml.pre"] = pre;
  return md(o);
}

Deno.test("BPE: unknown pre is an error naming the supported ones", () => {
  assertThrows(() => tokenizerFromMetadata(bpe("no-such-pre")), Error, "supported: default");
});

Deno.test("BPE: missing pre falls back to default with a warning, as llama.cpp", () => {
  const t = tokenizerFromMetadata(bpe(undefined));
  assertEquals(t.pre, "default");
  assert(t.warnings.some((w) => w.includes("missing pre-tokenizer")), "warning");
  assertEquals(t.encode("ab ab"), [2, 4]);
  // default BPE ids are 11 (out of this vocabulary → disabled); <|endoftext|> is found as EOG.
  assertEquals([t.bos, t.eos, t.addBos], [null, null, false]);
  assert(t.isEog(5) && t.isControl(5), "<|endoftext|> is an end marker");
});

Deno.test("unsupported tokenizer model is a clear error", () => {
  assertThrows(
    () => tokenizerFromMetadata(md({ "tokenizer.ggml.model": "bert" })),
    Error,
    'unsupported tokenizer model "bert"',
  );
  assertThrows(() => tokenizerFromMetadata(md({})), Error, "tokenizer.ggml.model");
});

Deno.test("ids, token types, scores and merges of the wrong kind are refused, naming the key", () => {
  // A NaN BOS passed the range check and fed token 0; an EOS of 2.5 became an end-of-generation id.
  for (const v of [NaN, 2.5]) {
    assertThrows(
      () => tokenizerFromMetadata(spm({ "tokenizer.ggml.bos_token_id": v })),
      Error,
      "tokenizer.ggml.bos_token_id should be an integer",
    );
  }
  // Strings or floats as token types made every token UNDEFINED: all output text was empty.
  assertThrows(
    () =>
      tokenizerFromMetadata(spm({
        "tokenizer.ggml.token_type": strings(Array(10).fill("3")),
      })),
    Error,
    "tokenizer.ggml.token_type should be an array of integers, not of STRING",
  );
  assertThrows(
    () =>
      tokenizerFromMetadata(spm({
        "tokenizer.ggml.token_type": {
          itemType: GGUFValueType.FLOAT64,
          values: new Float64Array(10).fill(1.5),
        },
      })),
    Error,
    "should be an array of integers, not of FLOAT64",
  );
  assertThrows(
    () => tokenizerFromMetadata(spm({ "tokenizer.ggml.scores": strings(Array(10).fill("x")) })),
    Error,
    "tokenizer.ggml.scores should be an array of numbers",
  );
  // Merges that are not strings failed with "w.indexOf is not a function".
  assertThrows(
    () =>
      tokenizerFromMetadata(md({
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": strings(["a", "b", "ab"]),
        "tokenizer.ggml.merges": { itemType: GGUFValueType.UINT32, values: Uint32Array.of(1, 2) },
      })),
    Error,
    "tokenizer.ggml.merges should be an array of strings, not of UINT32",
  );
  // Integer ids of any integer type still load (bigint from 64-bit keys).
  assertEquals(tokenizerFromMetadata(spm({ "tokenizer.ggml.bos_token_id": 2n })).bos, 2);
});
