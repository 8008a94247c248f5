/**
 * A member killed with -9 stays in `llmctl nodes list --all` and `cluster status` (as dead, with
 * when it died) for --departed-retention after gossip has reaped it; before, it vanished from
 * every view about 15 s after the kill (gossip's gossipToTheDeadTime with the local preset).
 */
import { startLocalAgent, stopLocalAgents } from "../../cli/local_cluster.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { llmctl, llmctlJson } from "../support/cli.ts";

const ARGS = ["--gossip-preset", "local", "--backend", "reference", "--no-model"];

type Nodes = { nodes: { id: string; state: string; state_changed_unix_ms: number }[] };

Deno.test("a killed member stays listed as dead for --departed-retention after gossip forgets it", async () => {
  const a = await startLocalAgent({ id: "a", args: ARGS });
  // b lists what gossip holds, no more: it shows when gossip has reaped c.
  const b = await startLocalAgent({
    id: "b",
    seeds: [a.gossipAddr],
    args: [...ARGS, "--departed-retention", "0"],
  });
  const c = await startLocalAgent({ id: "c", seeds: [a.gossipAddr], args: ARGS });
  const agents = [a, b, c];
  const list = (port: number) =>
    llmctlJson(["nodes", "list", "--all", "--json", "--endpoint", `127.0.0.1:${port}`]) as Promise<
      Nodes
    >;
  const stateOf = async (port: number, id: string) =>
    (await list(port)).nodes.find((n) => n.id === id)?.state;
  const until = async (what: string, ok: () => Promise<boolean>, ms: number) => {
    const end = Date.now() + ms;
    while (!(await ok())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  };
  try {
    await until("3 members", async () => (await list(a.rpcPort)).nodes.length === 3, 20_000);
    const killedAt = Date.now();
    c.child.kill("SIGKILL");
    await c.exited;
    await until(
      "c dead",
      async () => (await stateOf(a.rpcPort, "c")) === "NODE_STATE_DEAD",
      15_000,
    );
    // Gossip reaps a dead member after gossipToTheDeadTime (10 s with the local preset).
    await until(
      "gossip to forget c",
      async () => (await stateOf(b.rpcPort, "c")) === undefined,
      40_000,
    );
    const dead = (await list(a.rpcPort)).nodes.find((n) => n.id === "c");
    assertEquals(dead?.state, "NODE_STATE_DEAD", "a still lists c");
    assert(
      dead!.state_changed_unix_ms >= killedAt && dead!.state_changed_unix_ms <= Date.now(),
      `died at ${dead!.state_changed_unix_ms}, killed at ${killedAt}`,
    );
    const table = await llmctl(["nodes", "list", "--all", "--endpoint", `127.0.0.1:${a.rpcPort}`]);
    assertEquals(table.code, 0, table.stderr);
    assert(/^c\s+dead\s+\S+ s ago\s/m.test(table.stdout), table.stdout);
    const status = await llmctlJson([
      "cluster",
      "status",
      "--json",
      "--endpoint",
      `127.0.0.1:${a.rpcPort}`,
    ]);
    assertEquals(status.nodes, { total: 3, alive: 2, suspect: 0, dead: 1, left: 0 });
    // Without --all only the live members are listed, as before.
    const live = await llmctlJson([
      "nodes",
      "list",
      "--json",
      "--endpoint",
      `127.0.0.1:${a.rpcPort}`,
    ]);
    assertEquals((live as Nodes).nodes.map((n) => n.id), ["a", "b"]);
  } finally {
    await stopLocalAgents(agents.filter((x) => x !== c));
  }
});
