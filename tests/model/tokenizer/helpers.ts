/** Shared loading for the tokenizer tests: fixture paths and cached tokenizers. */
import { openGGUF } from "../../../model/gguf/mod.ts";
import { type Tokenizer, tokenizerFromMetadata } from "../../../model/tokenizer/mod.ts";
import { FIXTURES } from "../../support/paths.ts";
import { assertEquals } from "../../support/assert.ts";

export { FIXTURES };

/** The four llama.cpp vocab test files. */
export const VOCABS = ["llama-spm", "llama-bpe", "qwen2", "gpt-2"] as const;

const cache = new Map<string, Promise<Tokenizer>>();

/** Tokenizer of a GGUF under the fixtures folder (e.g. "vocab/ggml-vocab-qwen2.gguf"). */
export function loadTokenizer(rel: string): Promise<Tokenizer> {
  let p = cache.get(rel);
  if (!p) {
    p = (async () => {
      const f = await openGGUF(`${FIXTURES}/${rel}`);
      try {
        return tokenizerFromMetadata(f.metadata);
      } finally {
        f.close();
      }
    })();
    cache.set(rel, p);
  }
  return p;
}

/** Tokenizer of one of the four vocab fixtures. */
export function vocabTokenizer(name: string): Promise<Tokenizer> {
  return loadTokenizer(`vocab/ggml-vocab-${name}.gguf`);
}

/** The cases of a vocab fixture: input text and expected ids. */
export async function vocabCases(name: string): Promise<{ text: string; ids: number[] }[]> {
  const inp = await Deno.readTextFile(`${FIXTURES}/vocab/ggml-vocab-${name}.gguf.inp`);
  const out = await Deno.readTextFile(`${FIXTURES}/vocab/ggml-vocab-${name}.gguf.out`);
  const texts = inp.split("\n__ggml_vocab_test__\n");
  texts.pop(); // the file ends with the separator
  const lines = out.split("\n");
  lines.pop();
  if (texts.length !== lines.length) {
    throw new Error(`${name}: ${texts.length} inputs but ${lines.length} outputs`);
  }
  return texts.map((text, i) => ({
    text,
    ids: lines[i].trim() === "" ? [] : lines[i].trim().split(/\s+/).map(Number),
  }));
}

/** Assert `tok` encodes each of `cases` (no BOS) to the ids llama.cpp gave, naming the case. */
export function assertEncodesAll(
  tok: Tokenizer,
  cases: readonly string[],
  want: readonly number[][],
  label: string,
): void {
  assertEquals(want.length, cases.length);
  for (const [i, text] of cases.entries()) {
    assertEquals(tok.encode(text, { addBos: false }), want[i], `${label} ${JSON.stringify(text)}`);
  }
}
