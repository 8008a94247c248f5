/** Streaming detokenizer: partial UTF-8 across tokens is held until the character completes. */
import { assert, assertEquals } from "../../support/assert.ts";
import { vocabTokenizer } from "./helpers.ts";

function streamAll(tok: Awaited<ReturnType<typeof vocabTokenizer>>, ids: number[]): string[] {
  const dec = tok.createDecoder();
  const out = ids.map((id) => dec.push(id));
  out.push(dec.flush());
  return out;
}

for (const name of ["llama-spm", "llama-bpe", "qwen2", "gpt-2"]) {
  Deno.test(`${name}: streaming decode of emoji and CJK equals decode()`, async () => {
    const tok = await vocabTokenizer(name);
    const text = "Llamas 🦙 in 日本 — naïve 👩‍👩‍👧 ok";
    const ids = tok.encode(text, { addBos: false });
    const parts = streamAll(tok, ids);
    // Without a BOS, decode() strips the SPM prefix space that the stream keeps.
    const expect = tok.model === "llama" ? " " + text : text;
    assertEquals(parts.join(""), expect);
    assertEquals(tok.decode(ids, { cleanSpaces: false }), text);
    // Nothing ever emits half a character.
    for (const p of parts) {
      assert(!p.includes("\uFFFD"), `replacement char in ${JSON.stringify(p)}`);
    }
  });
}

Deno.test("SPM byte tokens: 🦙 split over four <0xXX> tokens comes out once, complete", async () => {
  const tok = await vocabTokenizer("llama-spm");
  const bytes = [...new TextEncoder().encode("🦙")];
  const ids = bytes.map((b) => tok.tokenId(`<0x${b.toString(16).toUpperCase()}>`)!);
  const parts = streamAll(tok, ids);
  assertEquals(parts, ["", "", "", "🦙", ""]);
});

Deno.test("byte-level BPE: 日本 split byte by byte streams as whole characters", async () => {
  const tok = await vocabTokenizer("gpt-2");
  // One token per byte: each byte's GPT-2 char is a vocabulary entry.
  const bytes = [...new TextEncoder().encode("日本")];
  const ids = bytes.map((b) => tok.tokenId(charOf(b))!);
  assertEquals(streamAll(tok, ids), ["", "", "日", "", "", "本", ""]);
  assertEquals(tok.decode(ids), "日本");
});

Deno.test("flush: leftover partial bytes become U+FFFD", async () => {
  const tok = await vocabTokenizer("llama-spm");
  const dec = tok.createDecoder();
  assertEquals(dec.push(tok.tokenId("<0xF0>")!), "");
  assertEquals(dec.push(tok.tokenId("<0x9F>")!), "");
  assertEquals(dec.flush(), "\uFFFD");
});

Deno.test("control tokens render as nothing unless unparseSpecial", async () => {
  const tok = await vocabTokenizer("qwen2");
  const end = tok.tokenId("<|im_end|>")!;
  assert(tok.isControl(end));
  assert(tok.isEog(end));
  assertEquals(tok.createDecoder().push(end), "");
  assertEquals(tok.createDecoder({ unparseSpecial: true }).push(end), "<|im_end|>");
});

/** GPT-2's printable char for a byte (bytes ≥ 0xA1 except 0xAD map to themselves). */
function charOf(b: number): string {
  if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) {
    return String.fromCharCode(b);
  }
  let n = 0;
  for (let c = 0; c < b; c++) {
    if (!((c >= 0x21 && c <= 0x7e) || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff))) n++;
  }
  return String.fromCharCode(256 + n);
}
