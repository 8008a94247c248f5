/**
 * `--cluster-name` keeps clusters apart and `--discover` finds the agents of one, with real agent
 * processes on loopback. Before, an agent of cluster "other" given a seed of cluster "default"
 * joined it, took a pipeline stage and served its requests (the name was only displayed), and
 * `--discover` was parsed but never started: two agents with it and no seeds stayed alone.
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  type AgentProcess,
  generate,
  startAgent,
  startCluster,
  stopAll,
  waitForPlacement,
} from "../support/agents.ts";
import { llmctlJson } from "../support/cli.ts";
import { STORIES } from "../support/paths.ts";
import { loopbackMulticastWorks } from "../support/multicast.ts";

async function logged(
  agent: AgentProcess,
  pred: (l: Record<string, unknown>) => boolean,
  ms: number,
): Promise<Record<string, unknown>> {
  const end = Date.now() + ms;
  for (;;) {
    const hit = agent.logs.find(pred);
    if (hit) return hit;
    if (Date.now() > end) {
      throw new Error(`not logged within ${ms} ms:\n${agent.stderr.join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

function status(agent: AgentProcess) {
  return llmctlJson(["cluster", "status", "--json", "--endpoint", `127.0.0.1:${agent.rpcPort}`]);
}

Deno.test('an agent of another --cluster-name cannot join through a seed of cluster "default", nor take a stage of it', async () => {
  const agents = await startCluster(["a"], { model: STORIES });
  const [a] = agents;
  try {
    await waitForPlacement(a, 1);
    const x = await startAgent({
      id: "x",
      seeds: [a.gossipAddr],
      model: STORIES,
      extra: ["--cluster-name", "other"],
    });
    agents.push(x);
    const refused = await logged(
      x,
      (l) =>
        l.msg === "join failed; retrying" &&
        String(l.error).includes(
          'the seed is in cluster "default" and this agent in cluster "other"',
        ),
      15_000,
    );
    assert(String(refused.error).includes("--cluster-name"), String(refused.error));
    const warned = await logged(
      a,
      (l) => String(l.msg).includes("dropped gossip of another cluster"),
      5_000,
    );
    assertEquals([warned.theirs, warned.ours], ["other", "default"]);
    // Give a join (and a re-plan over both) the time it took before.
    await new Promise((r) => setTimeout(r, 2000));
    const seen = await status(a);
    assertEquals(seen.cluster, "default");
    assertEquals((seen.nodes as { alive: number }).alive, 1);
    assertEquals((seen.stages as { node: string }[]).map((s) => s.node), ["a"]);
    const theirs = await status(x);
    assertEquals(theirs.cluster, "other");
    assertEquals((theirs.nodes as { alive: number }).alive, 1);
    // Requests to cluster "default" pass only through its own agent.
    const out = await generate(a, "Once upon a time", 4);
    assertEquals(out.tokens.length, 4);
    assertEquals(x.logs.filter((l) => l.msg === "joined the cluster"), []);
  } finally {
    await stopAll(agents);
  }
});

const MULTICAST = await loopbackMulticastWorks("239.255.79.48");

Deno.test({
  name:
    "--discover: agents without seeds find the agents of their cluster by multicast, not another's",
  // Skipped (reported as ignored, never passed) only where the host has no loopback multicast.
  ignore: !MULTICAST,
  fn: async () => {
    // A name of its own: other test runs' agents on this host announce on the same group.
    const name = `t${crypto.randomUUID().slice(0, 8)}`;
    const keys = ["--gossip-keys", btoa(String.fromCharCode(...new Uint8Array(32).fill(5)))];
    const extra = ["--discover", "--cluster-name", name, ...keys];
    const agents: AgentProcess[] = [];
    try {
      agents.push(await startAgent({ id: "d1", model: STORIES, extra }));
      agents.push(await startAgent({ id: "d2", model: STORIES, extra }));
      // Same keys, another name: hears the group, joins no one of the first cluster.
      agents.push(
        await startAgent({
          id: "d3",
          model: STORIES,
          extra: ["--discover", "--cluster-name", `${name}x`, ...keys],
        }),
      );
      const [d1, d2, d3] = agents;
      for (const d of agents) {
        await logged(d, (l) => String(l.msg).startsWith("multicast discovery started"), 10_000);
      }
      await waitForPlacement(d1, 2, 20_000);
      const joined = (d: AgentProcess) =>
        d.logs.some((l) => l.msg === "discovery: joined a member heard by multicast discovery");
      assert(joined(d1) || joined(d2), [...d1.stderr, ...d2.stderr].join("\n"));
      await new Promise((r) => setTimeout(r, 1500));
      assertEquals(((await status(d1)).nodes as { alive: number }).alive, 2);
      assertEquals(((await status(d3)).nodes as { alive: number }).alive, 1);
      assertEquals(joined(d3), false);
    } finally {
      await stopAll(agents);
    }
  },
});
