/** Detokenization gives the input back: always for byte-level BPE, and for SPM where it can. */
import { assertEquals } from "../../support/assert.ts";
import { vocabCases, VOCABS, vocabTokenizer } from "./helpers.ts";

for (const name of VOCABS) {
  Deno.test(`vocab ${name}: decode(encode(text)) === text for every fixture case`, async () => {
    const tok = await vocabTokenizer(name);
    const bad: string[] = [];
    for (const { text } of await vocabCases(name)) {
      const ids = tok.encode(text, { addBos: false });
      // clean_spaces is a lossy llama.cpp option (" ," → ","), so the round trip turns it off.
      const back = tok.decode(ids, { cleanSpaces: false });
      if (back !== text) bad.push(`${JSON.stringify(text)} → ${JSON.stringify(back)}`);
    }
    assertEquals(bad, []);
  });
}

Deno.test("SPM decode: leading space of the first piece is removed, as llama_detokenize", async () => {
  const tok = await vocabTokenizer("llama-spm");
  const ids = tok.encode("Hello world", { addBos: false });
  assertEquals(tok.tokenText(ids[0]), "▁Hello");
  assertEquals(tok.decode(ids), "Hello world");
  // With BOS first (not removed) llama.cpp keeps the space: BOS itself renders as nothing.
  assertEquals(tok.decode([tok.bos!, ...ids]), " Hello world");
  // removeSpecial drops the BOS and, as in llama.cpp, keeps the space too.
  assertEquals(tok.decode([tok.bos!, ...ids], { removeSpecial: true }), " Hello world");
  assertEquals(tok.decode([tok.bos!, ...ids], { unparseSpecial: true }), "<s> Hello world");
});

Deno.test("clean_spaces: llama-bpe cleans ' ,' and \" 's\" by default, qwen2 does not", async () => {
  const llama = await vocabTokenizer("llama-bpe");
  const qwen = await vocabTokenizer("qwen2");
  const text = "a , b ' c 's d 're e 'll f ?";
  assertEquals(llama.cleanSpaces, true);
  assertEquals(llama.decode(llama.encode(text, { addBos: false })), "a, b'c's d're e 'll f?");
  assertEquals(qwen.cleanSpaces, false);
  assertEquals(qwen.decode(qwen.encode(text)), text);
});
