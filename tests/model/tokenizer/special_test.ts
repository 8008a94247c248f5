/** Special tokens: plain text by default, split out with parseSpecial (tokenizer_st_partition). */
import { assert, assertEquals } from "../../support/assert.ts";
import { vocabTokenizer } from "./helpers.ts";

Deno.test("qwen2: <|im_start|> is text unless parseSpecial", async () => {
  const tok = await vocabTokenizer("qwen2");
  const start = tok.tokenId("<|im_start|>")!;
  const end = tok.tokenId("<|im_end|>")!;
  const text = "<|im_start|>user\nhi<|im_end|>\n";
  const plain = tok.encode(text);
  assert(!plain.includes(start) && !plain.includes(end), "parsed without parseSpecial");
  const parsed = tok.encode(text, { parseSpecial: true });
  assertEquals(parsed[0], start);
  assertEquals(parsed.filter((id) => id === end).length, 1);
  // The text between the markers tokenizes on its own, as separate fragments.
  assertEquals(parsed.slice(1, parsed.indexOf(end)), tok.encode("user\nhi"));
  assertEquals(tok.decode(parsed, { unparseSpecial: true }), text);
  assertEquals(tok.decode(parsed), "user\nhi\n");
});

Deno.test("llama-bpe: BOS/EOS flags and parseSpecial of <|begin_of_text|>", async () => {
  const tok = await vocabTokenizer("llama-bpe");
  assertEquals([tok.addBos, tok.addEos, tok.bos, tok.eos], [true, false, 128000, 128001]);
  assertEquals(tok.pre, "llama-bpe");
  assertEquals(tok.encode("<|begin_of_text|>Hi", { parseSpecial: true }), [128000, 128000, 13347]);
  assertEquals(tok.encode("Hi", { addBos: false, addEos: true }), [13347, 128001]);
  assert(tok.isEog(128001) && tok.isEog(tok.tokenId("<|eot_id|>")!), "eog ids");
  assertEquals(tok.eot, tok.tokenId("<|eot_id|>")!);
  assert(!tok.isEog(128000), "BOS is not EOG");
});

Deno.test("SPM: a raw fragment after a special token gets the space prefix again", async () => {
  const tok = await vocabTokenizer("llama-spm");
  assertEquals([tok.addBos, tok.addEos, tok.bos, tok.eos, tok.unk], [true, false, 1, 2, 0]);
  const ids = tok.encode("Hi</s>Hi", { addBos: false, parseSpecial: true });
  const hi = tok.encode("Hi", { addBos: false });
  assertEquals(ids, [...hi, 2, ...hi]);
  assertEquals(tok.encode("Hi", { addBos: true }), [1, ...hi]);
});

Deno.test("tokenPiece: raw bytes of pieces", async () => {
  const spm = await vocabTokenizer("llama-spm");
  const dec = (b: Uint8Array) => new TextDecoder().decode(b);
  assertEquals(dec(spm.tokenPiece(spm.tokenId("▁the")!)), " the");
  assertEquals([...spm.tokenPiece(spm.tokenId("<0x0A>")!)], [10]);
  assertEquals(dec(spm.tokenPiece(1)), "<s>");
  assertEquals(spm.tokenPiece(1, false).length, 0);
  const gpt2 = await vocabTokenizer("gpt-2");
  assertEquals(dec(gpt2.tokenPiece(gpt2.tokenId("Ġworld")!)), " world");
  assertEquals(dec(gpt2.tokenPiece(gpt2.tokenId("Ċ")!)), "\n");
});
