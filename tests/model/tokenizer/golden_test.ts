/** Golden prompts: tokenizing each golden's prompt with its model's metadata gives llama.cpp's ids. */
import { assertEquals } from "../../support/assert.ts";
import { FIXTURES, loadTokenizer } from "./helpers.ts";

const goldens: string[] = [];
for (const e of Deno.readDirSync(`${FIXTURES}/golden`)) {
  if (e.name.endsWith(".json")) goldens.push(e.name);
}
goldens.sort();

for (const name of goldens) {
  Deno.test(`golden ${name}: prompt_tokens`, async () => {
    const g = JSON.parse(await Deno.readTextFile(`${FIXTURES}/golden/${name}`));
    const tok = await loadTokenizer(g.model);
    assertEquals(tok.addBos, g.add_bos, "add_bos from metadata");
    // Default options = llama.cpp add_special=true, parse_special=false (how goldens were made).
    assertEquals(tok.encode(g.prompt), g.prompt_tokens);
    // The prompt comes back from its tokens (the SPM leading space is the add_space_prefix one).
    const body = g.add_bos ? g.prompt_tokens.slice(1) : g.prompt_tokens;
    assertEquals(tok.decode(body, { cleanSpaces: false }), g.prompt);
  });
}

Deno.test("golden greedy_text: decoding the continuation after the prompt", async () => {
  // node-llama-cpp's detokenize(greedy, true, promptTokens) is the reference text; it renders
  // special tokens and decodes with clean_spaces, so compare through the same llama_detokenize.
  let checked = 0;
  for (const name of goldens) {
    const g = JSON.parse(await Deno.readTextFile(`${FIXTURES}/golden/${name}`));
    const tok = await loadTokenizer(g.model);
    const all = tok.decode([...g.prompt_tokens, ...g.greedy_ids], { unparseSpecial: true });
    const prefix = tok.decode(g.prompt_tokens, { unparseSpecial: true });
    if (all.startsWith(prefix) && all.slice(prefix.length) === g.greedy_text) checked++;
    else {console.log(
        `${name}: greedy_text differs:\n  ${
          JSON.stringify(all.slice(prefix.length)).slice(0, 200)
        }\n  ${JSON.stringify(g.greedy_text).slice(0, 200)}`,
      );}
  }
  assertEquals(checked, goldens.length);
});
