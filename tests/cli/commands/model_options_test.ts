/** The local-model options of generate/eval/chat, as a user gives them. */
import { assert, assertEquals } from "../../support/assert.ts";
import { llmctl } from "../../support/cli.ts";

Deno.test("generate --ctx past the model's context length ends as length, not 'context is full'", async () => {
  // stories260K's context length is 2048; -n asks for more than that.
  const r = await llmctl([
    "generate",
    "-p",
    "Once",
    "-n",
    "3000",
    "--ctx",
    "100000",
    "--ignore-eos",
    "--temperature",
    "0",
    "--json",
  ]);
  // Before, the session held 2048 positions while generation was bounded by 100000: exit 1.
  assertEquals(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assertEquals(out.finish_reason, "length");
  assert(out.prompt_tokens.length + out.tokens.length <= 2048, `${out.tokens.length} tokens`);
  assert(r.stderr.includes("using 2048"), r.stderr);
});
