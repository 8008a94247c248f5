/**
 * The gpt-4o pre-tokenizer (Phi-4 mini, Llama 4, ...): the shared llama-bpe and qwen2 vocabularies
 * with `tokenizer.ggml.pre` = "gpt-4o" tokenize as llama.cpp 80fb11a tokenizes them. Expected ids:
 * gpt4o_cases.json (made_by says how: llama.cpp's llama-tokenize on the same edited files).
 */
import { assert, assertEquals } from "../../support/assert.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import type { GGUFValue } from "../../../model/gguf/types.ts";
import { type Tokenizer, tokenizerFromMetadata } from "../../../model/tokenizer/mod.ts";
import { PRE_TOKENIZERS } from "../../../model/tokenizer/pretokenizers.ts";
import { preTokenize } from "../../../model/tokenizer/unicode.ts";
import { FIXTURES } from "./helpers.ts";

const ref: {
  cases: string[];
  expected: Record<string, string[]>;
  add_bos: Record<string, boolean>;
} = JSON.parse(
  await Deno.readTextFile(new URL("./gpt4o_cases.json", import.meta.url)),
);

/** A shared vocab fixture's tokenizer with only `tokenizer.ggml.pre` changed (as editedGGUF does). */
async function withPre(vocab: string, pre: string): Promise<Tokenizer> {
  const f = await openGGUF(`${FIXTURES}/vocab/ggml-vocab-${vocab}.gguf`);
  try {
    const md = f.metadata;
    return tokenizerFromMetadata({
      get: (key: string): GGUFValue | undefined => key === "tokenizer.ggml.pre" ? pre : md.get(key),
    });
  } finally {
    f.close();
  }
}

for (const vocab of ["llama-bpe", "qwen2"]) {
  Deno.test(`gpt-4o pre-tokenizer on the ${vocab} vocabulary: llama.cpp's ids`, async () => {
    const tok = await withPre(vocab, "gpt-4o");
    const want = ref.expected[vocab].map((l) => l === "" ? [] : l.split(" ").map(Number));
    assertEquals(want.length, ref.cases.length);
    const failures: string[] = [];
    for (const [i, text] of ref.cases.entries()) {
      const got = tok.encode(text, { addBos: false, addEos: false, parseSpecial: false });
      if (JSON.stringify(got) !== JSON.stringify(want[i])) {
        failures.push(
          `${JSON.stringify(text)}\n  want ${want[i].join(" ")}\n  got  ${got.join(" ")}`,
        );
      }
    }
    assertEquals(failures, [], `${failures.length}/${ref.cases.length} cases differ`);
  });

  Deno.test(`gpt-4o on ${vocab}: decode(encode(text)) === text for every case`, async () => {
    const tok = await withPre(vocab, "gpt-4o");
    const bad: string[] = [];
    for (const text of ref.cases) {
      const back = tok.decode(tok.encode(text, { addBos: false }), { cleanSpaces: false });
      if (back !== text) bad.push(`${JSON.stringify(text)} → ${JSON.stringify(back)}`);
    }
    assertEquals(bad, []);
  });
}

Deno.test("gpt-4o: llama.cpp's flags (no clean_spaces, merges not skipped, no forced BOS)", async () => {
  for (const name of ["gpt-4o", "llama4", "kanana2", "talkie"]) {
    const pre = PRE_TOKENIZERS.get(name);
    assert(pre !== undefined, name);
    assertEquals([pre.type, pre.cleanSpaces, pre.ignoreMerges, pre.addBos], [
      "gpt4o",
      false,
      false,
      undefined,
    ]);
  }
  // Unlike llama3's, gpt-4o forces no BOS: llama-bpe's vocabulary under it adds none.
  for (const vocab of ["llama-bpe", "qwen2"]) {
    assertEquals((await withPre(vocab, "gpt-4o")).addBos, ref.add_bos[vocab], vocab);
  }
});

Deno.test("gpt-4o splits: ASCII case only; non-ASCII letters are both cases; marks split words", () => {
  const steps = PRE_TOKENIZERS.get("gpt-4o")!.steps;
  assertEquals(preTokenize("HelloWorld ABCdef DON'T I'M", steps), [
    "Hello",
    "World",
    " ABCdef",
    " DON'T",
    " I'M",
  ]);
  // ǅ (titlecase) and ʰ (modifier) are plain letters in llama.cpp's table: no split around them.
  assertEquals(preTokenize("AǅBaʰb", steps), ["AǅBaʰb"]);
  // U+0301 is \p{M}, which llama.cpp's rewritten regex leaves out of words.
  assertEquals(preTokenize("cafe\u0301 x", steps), ["cafe", "\u0301", " x"]);
  assertEquals(preTokenize("1234567", steps), ["123", "456", "7"]);
  assertEquals(preTokenize("a/b/\n//", steps), ["a", "/b", "/\n//"]);
});
