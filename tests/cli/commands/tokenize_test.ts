/** `llmctl tokenize`'s human output. */
import { assert, assertEquals } from "../../support/assert.ts";
import { llmctl } from "../../support/cli.ts";

Deno.test("tokenize shows each token's piece with its leading space, as llama-tokenize does", async () => {
  const r = await llmctl(["tokenize", "--text", "Hello world"]);
  assertEquals(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split("\n").map((l) => l.trim());
  // Before: `1  ""` and `263  "w"`, so the word boundary before "world" did not show.
  assertEquals(lines[0], '1  "<s>"');
  assert(lines.includes('263  " w"'), r.stdout);
});
