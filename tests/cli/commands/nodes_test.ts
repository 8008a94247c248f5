/** `llmctl nodes` argument checks that need no agent. */
import { assert, assertEquals } from "../../support/assert.ts";
import { llmctl } from "../../support/cli.ts";

Deno.test("nodes log-level: an unknown level is a usage error (exit 2) before any agent is asked", async () => {
  // Port 1: nobody listens, so reaching the network would end with exit 3 instead.
  const r = await llmctl(["nodes", "log-level", "b", "loud", "--endpoint", "127.0.0.1:1"]);
  assertEquals(r.code, 2, r.stderr);
  assert(r.stderr.includes("loud") && r.stderr.includes("debug, info, warn, error"), r.stderr);
});
