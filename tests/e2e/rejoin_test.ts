/**
 * A seed agent stopped gracefully (SIGTERM: it leaves) and restarted on the same address
 * without --seeds finds the cluster again: the others retry left members' addresses for the
 * reconnect window, as Serf does (issue 16, item 5).
 */
import { createClient } from "@connectrpc/connect";
import { startLocalAgent, stopLocalAgents } from "../../cli/local_cluster.ts";
import { createRpcTransport } from "../../cluster/rpc/mod.ts";
import { DiscoveryService, NodeState } from "../../proto/mod.ts";
import { assertEquals } from "../support/assert.ts";

const ARGS = ["--gossip-preset", "local", "--backend", "reference", "--no-model"];

async function alivePeers(rpcPort: number): Promise<string[]> {
  const t = await createRpcTransport(`127.0.0.1:${rpcPort}`);
  try {
    const info = await createClient(DiscoveryService, t).getClusterInfo({});
    return info.nodes.filter((n) => n.state === NodeState.ALIVE).map((n) => n.id).sort();
  } finally {
    t.close();
  }
}

async function waitFor(rpcPort: number, want: string[], timeoutMs: number): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  let seen: string[] = [];
  while (Date.now() < deadline) {
    seen = await alivePeers(rpcPort).catch(() => []);
    if (JSON.stringify(seen) === JSON.stringify(want)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  return seen;
}

Deno.test("a seed restarted after a graceful stop rejoins without --seeds", async () => {
  let seed = await startLocalAgent({ id: "seed", args: ARGS });
  // The restart binds the port the first run got (free again once it stopped).
  const seedArgs = [...ARGS, "--gossip-port", seed.gossipAddr.split(":").pop()!];
  const others = [
    await startLocalAgent({ id: "b", seeds: [seed.gossipAddr], args: ARGS }),
    await startLocalAgent({ id: "c", seeds: [seed.gossipAddr], args: ARGS }),
  ];
  const all = () => [seed, ...others];
  try {
    assertEquals(await waitFor(seed.rpcPort, ["b", "c", "seed"], 15_000), ["b", "c", "seed"]);
    await stopLocalAgents([seed]); // SIGTERM: a graceful leave
    assertEquals(await waitFor(others[0].rpcPort, ["b", "c"], 15_000), ["b", "c"]);
    // The same address, no seeds: only the cluster calling back can bring it in.
    seed = await startLocalAgent({ id: "seed", args: seedArgs });
    assertEquals(await waitFor(seed.rpcPort, ["b", "c", "seed"], 20_000), ["b", "c", "seed"]);
    assertEquals(await waitFor(others[1].rpcPort, ["b", "c", "seed"], 10_000), [
      "b",
      "c",
      "seed",
    ]);
  } finally {
    await stopLocalAgents(all());
  }
});
