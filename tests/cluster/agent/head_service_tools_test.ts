/**
 * The head's output decoder while tools are offered (markerDecoder): a format's call marker
 * that the vocabulary holds as a control token comes out as its text (decoding drops control
 * tokens), so the API finds the calls; without tools, or for markers the vocabulary lacks, the
 * output decodes as before.
 */
import { markerDecoder } from "../../../cluster/agent/decoding.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { tokenizerFromMetadata } from "../../../model/tokenizer/mod.ts";
import { FIXTURES } from "../../support/paths.ts";
import { assert, assertEquals } from "../../support/assert.ts";

Deno.test("a marker that is a control token is decoded as its text; other tokens as before", async () => {
  // No fixture vocabulary holds [TOOL_CALLS] or <|python_tag|>: Qwen's <|im_start|> is a control
  // token of the same kind, standing in for them.
  const f = await openGGUF(`${FIXTURES}/vocab/ggml-vocab-qwen2.gguf`);
  try {
    const tok = tokenizerFromMetadata(f.metadata);
    const marker = tok.tokenId("<|im_start|>")!;
    assert(tok.isControl(marker));
    const ids = [...tok.encode("Héllo "), marker, ...tok.encode('[{"a": 1}]')];
    const run = (d: { push(id: number): string; flush(): string }) =>
      ids.map((id) => d.push(id)).join("") + d.flush();
    assertEquals(run(markerDecoder(tok, ["<|im_start|>"])), 'Héllo <|im_start|>[{"a": 1}]');
    // Plain decoding drops it, as the head does without tools.
    assertEquals(run(tok.createDecoder()), 'Héllo [{"a": 1}]');
    // Markers the vocabulary lacks (or holds as text) change nothing.
    assertEquals(run(markerDecoder(tok, ["[TOOL_CALLS]", "Hé"])), 'Héllo [{"a": 1}]');
  } finally {
    f.close();
  }
});
