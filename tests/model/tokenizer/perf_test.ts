/** Encoding a few KB with a 150k vocabulary takes milliseconds. */
import { assert } from "../../support/assert.ts";
import { vocabCases, vocabTokenizer } from "./helpers.ts";

for (const name of ["qwen2", "llama-bpe", "llama-spm"]) {
  Deno.test(`perf ${name}: ~8 KB of mixed text encodes in well under a second`, async () => {
    const tok = await vocabTokenizer(name);
    const sample = (await vocabCases(name)).map((c) => c.text).join("\n");
    const text = sample.repeat(Math.ceil(8192 / sample.length)).slice(0, 8192);
    tok.encode(text); // warm up (JIT, lazy unicode tables)
    const t0 = performance.now();
    const ids = tok.encode(text);
    const ms = performance.now() - t0;
    assert(ids.length > 0, "tokens");
    // Typical: a few ms. The bound is loose so slow CI machines do not flake.
    assert(ms < 500, `${name}: ${ms.toFixed(1)} ms for ${text.length} chars`);
    console.log(`${name}: ${text.length} chars → ${ids.length} tokens in ${ms.toFixed(1)} ms`);
  });
}
