/**
 * Codepoint classes come from llama.cpp's table (unicode_table.ts), not from the JS engine's
 * newer Unicode: the characters whose \p{L}, \p{N} or \p{P} differ between the two tokenize as
 * llama.cpp tokenizes them, in every pre-tokenizer. Expected ids: unicode_class_cases.json
 * (made_with says how).
 */
import { assertEquals } from "../../support/assert.ts";
import { type GGUFValue, GGUFValueType } from "../../../model/gguf/mod.ts";
import { tokenizerFromMetadata } from "../../../model/tokenizer/mod.ts";
import { PRE_TOKENIZERS } from "../../../model/tokenizer/pretokenizers.ts";
import {
  BYTE_TO_CHAR,
  categoryClass,
  CPT_ACCENT_MARK,
  CPT_CONTROL,
  CPT_LETTER,
  CPT_NUMBER,
  CPT_PUNCTUATION,
  CPT_SEPARATOR,
  CPT_SYMBOL,
  CPT_UNDEFINED,
  CPT_WHITESPACE,
  cptFlags,
  preTokenize,
  utf8,
} from "../../../model/tokenizer/unicode.ts";
import { assertEncodesAll, vocabTokenizer } from "./helpers.ts";

const ref: { cases: string[]; crafted_prefixes: string[]; expected: Record<string, number[][]> } =
  JSON.parse(
    await Deno.readTextFile(new URL("./unicode_class_cases.json", import.meta.url)),
  );

Deno.test("cptFlags: llama.cpp's categories, not the JS engine's", () => {
  const cases: [number, number][] = [
    [0x41, CPT_LETTER],
    [0x35, CPT_NUMBER],
    [0x21, CPT_PUNCTUATION],
    [0x24, CPT_SYMBOL],
    [0x301, CPT_ACCENT_MARK],
    [0x00, CPT_CONTROL],
    [0xfeff, CPT_CONTROL], // not White_Space, unlike JS \s
    [0x20, CPT_SEPARATOR | CPT_WHITESPACE],
    [0x3000, CPT_SEPARATOR | CPT_WHITESPACE],
    [0x85, CPT_CONTROL | CPT_WHITESPACE],
    [0x378, CPT_UNDEFINED],
    [0x10ffff, CPT_UNDEFINED],
    // Letters, digits and punctuation to the JS engine (Unicode 16), unassigned in llama.cpp's.
    [0x1c89, CPT_UNDEFINED],
    [0xa7cb, CPT_UNDEFINED],
    [0x16d70, CPT_UNDEFINED],
    [0x10d40, CPT_UNDEFINED],
    [0x116d0, CPT_UNDEFINED],
    [0x1b4e, CPT_UNDEFINED],
  ];
  for (const [cp, flags] of cases) {
    assertEquals(cptFlags(cp).toString(16), flags.toString(16), `U+${cp.toString(16)}`);
  }
});

Deno.test("categoryClass: below 128 it is llama.cpp's k_ucat_map", () => {
  const ascii = (body: string) => {
    const re = new RegExp(`[${body}]`, "u");
    let out = "";
    for (let c = 0; c < 128; c++) {
      if (re.test(String.fromCharCode(c))) out += String.fromCharCode(c);
    }
    return out;
  };
  assertEquals(
    ascii(categoryClass(CPT_LETTER)),
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
  );
  assertEquals(ascii(categoryClass(CPT_NUMBER)), "0123456789");
  assertEquals(ascii(categoryClass(CPT_PUNCTUATION)), "!\"#%&'()*,-./:;?@[\\]_{}");
  // White_Space is \v in llama.cpp's collapsed text, never a category.
  assertEquals(categoryClass(CPT_SEPARATOR), "");
});

Deno.test("default pre-tokenizer: \\p{P} is llama.cpp's (U+1B4E is not punctuation there)", () => {
  const steps = PRE_TOKENIZERS.get("default")!.steps;
  assertEquals(preTokenize("a!\u1b4e?", steps), ["a", "!", "\u1b4e", "?"]);
  assertEquals(preTokenize("!.,", steps), ["!.,"]);
});

for (const vocab of ["qwen2", "llama-bpe", "gpt-2"]) {
  Deno.test(`${vocab}: characters classed differently by JS tokenize as llama.cpp`, async () => {
    const tok = await vocabTokenizer(vocab);
    assertEncodesAll(tok, ref.cases, ref.expected[vocab], vocab);
  });
}

Deno.test("the reviewer's case: I + U+16D70 + 's on qwen2", async () => {
  const tok = await vocabTokenizer("qwen2");
  assertEquals(tok.encode("I\u{16d70}'s", { addBos: false }), [40, 125427, 113, 108, 6, 82]);
});

/**
 * A byte-level BPE vocabulary whose merges join each prefix with the whole of each character
 * that follows it in the cases, so a pre-token boundary between them shows in the ids (the real
 * vocabularies merge few of these characters). The same vocabulary, written as a GGUF, gave the
 * expected ids.
 */
function craftedVocab(pre: string): Map<string, GGUFValue> {
  const tokens = ["<|endoftext|>", ...BYTE_TO_CHAR];
  const merges: string[] = [];
  const seen = new Set(tokens);
  const chars = new Set<string>();
  for (const text of ref.cases) {
    for (const ch of text) if (ch.codePointAt(0)! >= 0x80) chars.add(ch);
  }
  for (const p of ref.crafted_prefixes) {
    for (const ch of chars) {
      let left = p;
      for (const b of utf8(ch)) {
        const right = BYTE_TO_CHAR[b];
        if (!seen.has(left + right)) {
          seen.add(left + right);
          tokens.push(left + right);
          merges.push(`${left} ${right}`);
        }
        left += right;
      }
    }
  }
  const types = new Int32Array(tokens.length).fill(1);
  types[0] = 3;
  return new Map<string, GGUFValue>([
    ["tokenizer.ggml.model", "gpt2"],
    ["tokenizer.ggml.pre", pre],
    ["tokenizer.ggml.tokens", { itemType: GGUFValueType.STRING, values: tokens }],
    ["tokenizer.ggml.token_type", { itemType: GGUFValueType.INT32, values: types }],
    ["tokenizer.ggml.merges", { itemType: GGUFValueType.STRING, values: merges }],
    ["tokenizer.ggml.bos_token_id", 0],
    ["tokenizer.ggml.eos_token_id", 0],
    ["tokenizer.ggml.add_bos_token", false],
  ]);
}

for (const pre of ["default", "starcoder", "qwen2", "gpt-2", "llama-bpe"]) {
  Deno.test(`crafted vocab, pre ${pre}: pre-token boundaries as llama.cpp's`, () => {
    const tok = tokenizerFromMetadata(craftedVocab(pre));
    const want = ref.expected[`crafted-${pre}`];
    assertEquals(want.length, ref.cases.length);
    for (const [i, text] of ref.cases.entries()) {
      assertEquals(tok.encode(text, { addBos: false }), want[i], `${pre} ${JSON.stringify(text)}`);
    }
  });
}
