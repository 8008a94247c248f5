/** `llmctl eval`'s human output. */
import { assert, assertEquals } from "../../support/assert.ts";
import { llmctl } from "../../support/cli.ts";

Deno.test("eval shows each candidate's piece with its leading space", async () => {
  const r = await llmctl(["eval", "--prompt", "Once upon a time", "--top", "2"]);
  assertEquals(r.code, 0, r.stderr);
  // Before, token 383 (" there") was shown as "there", like a continuation of "time".
  assert(/383\s+\S+\s+\S+\s+" there"/.test(r.stdout), r.stdout);
});
