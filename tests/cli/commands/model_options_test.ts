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

Deno.test("eval and tokenize refuse --endpoint (they run the model here) but not DLLM_ENDPOINT", async () => {
  for (const args of [["eval", "-p", "hi"], ["tokenize", "-t", "hi"]]) {
    // Port 1: nobody listens; before, the flag was ignored and the local answer printed (exit 0).
    const r = await llmctl([...args, "--endpoint", "127.0.0.1:1"]);
    assertEquals(r.code, 2, `${args[0]}: ${r.stdout}${r.stderr}`);
    assert(r.stderr.includes("drop --endpoint"), r.stderr);
    const env = await llmctl([...args, "--json"], { DLLM_ENDPOINT: "127.0.0.1:1" });
    assertEquals(env.code, 0, env.stderr);
  }
});
