/**
 * A cluster on IPv6 loopback (`--bind ::1`): two agents split the model, and llmctl reaches the
 * head at `[::1]:port` and gets the golden tokens. Skipped where the machine has no ::1.
 */
import { createRpcTransport } from "../../cluster/rpc/mod.ts";
import { assertEquals } from "../support/assert.ts";
import { startAgent, stopAll, waitForPlacement } from "../support/agents.ts";
import { llmctl } from "../support/cli.ts";
import { FIXTURES, STORIES } from "../support/paths.ts";

function haveIpv6Loopback(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "two agents bound to ::1 split the model and serve llmctl at [::1]:port",
  ignore: !haveIpv6Loopback(),
  fn: async () => {
    // Before: the first RPC call to an agent bound to IPv6 ended it (Connect could not parse
    // the ::1:port authority Deno's HTTP/2 client sends), and peers' RPC endpoints lacked
    // brackets.
    const opts = { model: STORIES, memoryBudget: "2MB", extra: ["--bind", "::1"] };
    const a = await startAgent({ id: "a", ...opts });
    const b = await startAgent({ id: "b", seeds: [a.gossipAddr], ...opts });
    try {
      a.transport.close();
      a.transport = await createRpcTransport(`[::1]:${a.rpcPort}`);
      await waitForPlacement(a, 2);
      const g = JSON.parse(Deno.readTextFileSync(`${FIXTURES}/golden/stories260K__once.json`));
      const r = await llmctl([
        ...["generate", "--endpoint", `[::1]:${a.rpcPort}`, "-p", g.prompt],
        ...["-n", "16", "--temperature", "0", "--json"],
      ]);
      assertEquals(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assertEquals(out.tokens, g.greedy_ids.slice(0, 16));
      assertEquals(
        new Set(out.placement.map((s: { node: string }) => s.node)),
        new Set(["a", "b"]),
      );
    } finally {
      await stopAll([a, b]);
    }
  },
});
