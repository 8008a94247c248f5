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
import { pretokenVocab } from "./pretoken_vocab.ts";

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
    const want = wantIds(vocab);
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

const PIECE_BYTES = 16;
const wantIds = (vocab: string) =>
  ref.expected[vocab].map((l) => l === "" ? [] : l.split(" ").map(Number));

Deno.test("gpt-4o on a vocabulary that shows pre-tokens: llama.cpp's ids", () => {
  const tok = tokenizerFromMetadata(pretokenVocab("gpt-4o", ref.cases, PIECE_BYTES));
  const want = wantIds(`pretoken-${PIECE_BYTES}`);
  const failures: string[] = [];
  for (const [i, text] of ref.cases.entries()) {
    const got = tok.encode(text, { addBos: false });
    if (JSON.stringify(got) !== JSON.stringify(want[i])) {
      const show = (ids: number[]) => JSON.stringify(ids.map((id) => tok.tokenText(id)));
      failures.push(`${JSON.stringify(text)}\n  want ${show(want[i])}\n  got  ${show(got)}`);
    }
  }
  assertEquals(failures, [], `${failures.length}/${ref.cases.length} cases differ`);
});

Deno.test("gpt-4o pre-tokens are llama.cpp's wherever its ids pin them down", () => {
  // On the pretoken vocabulary, two neighbouring pieces of llama.cpp's output that fit in
  // PIECE_BYTES together would have merged had they been one pre-token: so when every
  // neighbouring pair fits, the pieces are exactly llama.cpp's pre-tokens. Among them: "Hello" |
  // "World", "É" | "COLE" (a non-ASCII letter counts as lower case), "cafe" | U+0301 (marks are
  // not letters), "123" | "456" | "7".
  const tok = tokenizerFromMetadata(pretokenVocab("gpt-4o", ref.cases, PIECE_BYTES));
  const steps = PRE_TOKENIZERS.get("gpt-4o")!.steps;
  const want = wantIds(`pretoken-${PIECE_BYTES}`);
  let pinned = 0;
  for (const [i, text] of ref.cases.entries()) {
    const pieces = want[i].map((id) => tok.decode([id], { cleanSpaces: false }));
    const bytes = pieces.map((p) => new TextEncoder().encode(p).length);
    if (bytes.some((n, j) => j > 0 && n + bytes[j - 1] > PIECE_BYTES)) continue;
    assertEquals(preTokenize(text, steps), pieces, JSON.stringify(text));
    pinned++;
  }
  assert(pinned >= 130, `only ${pinned} cases pinned down`);
});
