/**
 * Replicas with real agent processes on loopback (issue 19): four agents whose budgets each hold
 * half of stories260K form two disjoint 2-stage pipelines under `--replicas auto`; a head spreads
 * concurrent requests over both; kill -9 of a node of the other replica mid-generation makes
 * that replica's sessions replay on the survivor, and every output is still the greedy golden.
 */
import { createClient } from "@connectrpc/connect";
import {
  DiscoveryService,
  type GetClusterInfoResponse,
  InferenceService,
} from "../../proto/mod.ts";
import { assert, assertEquals } from "../support/assert.ts";
import {
  type AgentProcess,
  startAgent,
  startCluster,
  stopAll,
  waitForPlacement,
} from "../support/agents.ts";
import { FIXTURES, STORIES } from "../support/paths.ts";
import { llmctl } from "../support/cli.ts";

const golden = (name: string) =>
  JSON.parse(Deno.readTextFileSync(`${FIXTURES}/golden/${name}.json`));

/** Poll GetClusterInfo until `ok` holds; the last view is in the error otherwise. */
async function waitFor(
  transport: Parameters<typeof createClient>[1],
  ok: (info: GetClusterInfoResponse) => boolean,
  what: string,
  timeoutMs = 30_000,
): Promise<GetClusterInfoResponse> {
  const client = createClient(DiscoveryService, transport);
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const info = await client.getClusterInfo({});
    if (ok(info)) return info;
    last = JSON.stringify(
      info.placement?.replicas.map((r) => r.stages.map((s) => `${s.nodeId}:${s.fromLayer}`)),
    );
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} within ${timeoutMs} ms (last replicas: ${last})`);
}

const hostedBy = (info: GetClusterInfoResponse) =>
  new Map(info.nodes.filter((n) => n.hosted).map((n) => [n.id, n.hosted!]));

/** Every replica's stages are loaded where the plan says. */
function replicasLoaded(info: GetClusterInfoResponse, n: number): boolean {
  const hosted = hostedBy(info);
  const reps = info.placement?.replicas ?? [];
  return reps.length === n &&
    reps.every((r) =>
      r.stages.every((s) =>
        hosted.get(s.nodeId)?.fromLayer === s.fromLayer &&
        hosted.get(s.nodeId)?.toLayer === s.toLayer
      )
    );
}

Deno.test({
  name:
    "replicas: 4 agents form 2 pipelines; killing one replica's node mid-load replays its sessions on the other; a new node re-forms it without moving the survivor",
  fn: async () => {
    let joined: AgentProcess | undefined;
    const g = golden("stories260K__once");
    // 1.6 MB holds layers [0,3) or [3,5) of stories260K (context 256, 8 sessions) but not all 5.
    const agents = await startCluster(["a", "b", "c", "d"], {
      model: STORIES,
      memoryBudget: "1.6MB",
      extra: ["--replicas", "auto"],
    });
    try {
      await waitForPlacement(agents[0], 4);
      const info = await waitFor(
        agents[0].transport,
        (i) => replicasLoaded(i, 2),
        "no two loaded replicas",
      );
      const p = info.placement!;
      assertEquals(p.replicasSetting, "auto");
      assertEquals(p.standby, []);
      const nodes = p.replicas.flatMap((r) => r.stages.map((s) => s.nodeId));
      assertEquals(new Set(nodes).size, 4, `disjoint replicas: ${nodes}`);
      for (const r of p.replicas) {
        assertEquals(r.stages.length, 2, "each pipeline as short as the budgets allow");
        assertEquals(r.id, r.stages[0].nodeId, "a replica is named by its first stage");
      }
      // Every agent derives the same plan and epoch from gossip.
      const epochs = await Promise.all(
        agents.map(async (a) =>
          (await createClient(DiscoveryService, a.transport).getClusterInfo({})).placement!.epoch
        ),
      );
      assertEquals(new Set(epochs).size, 1, `epochs differ: ${epochs}`);
      const status = await llmctl(
        ["cluster", "status", "--json", "--endpoint", `127.0.0.1:${agents[1].rpcPort}`],
      );
      assertEquals(status.code, 0, status.stderr);
      const s = JSON.parse(status.stdout);
      assertEquals(s.replicas.map((r: { id: string }) => r.id), p.replicas.map((r) => r.id));
      assertEquals(s.replicas_setting, "auto");

      // The head is a's agent; the victim is the first stage of the replica a is not in.
      const head = agents[0];
      const mine = p.replicas.find((r) => r.stages.some((st) => st.nodeId === head.id))!;
      const other = p.replicas.find((r) => r !== mine)!;
      const victimId = other.stages[0].nodeId;
      const victim = agents.find((a) => a.id === victimId)!;
      const client = createClient(InferenceService, head.transport);
      const N = 8;
      const counts = new Array(N).fill(0);
      let killed = false;
      const runs = Array.from({ length: N }, async (_, i) => {
        const tokens: number[] = [];
        let recoveries = 0;
        let served: string[] = [];
        for await (
          const m of client.generate({
            prompt: g.prompt,
            maxTokens: 64,
            sampler: { temperature: 0 },
          })
        ) {
          if (m.finishReason) {
            recoveries = m.usage?.recoveries ?? 0;
            served = m.placement?.stages.map((st) => st.nodeId) ?? [];
            break;
          }
          tokens.push(m.tokenId);
          counts[i] = tokens.length;
          // Mid-load: once every request has produced a few tokens.
          if (!killed && counts.every((c) => c >= 4)) {
            killed = true;
            victim.child.kill("SIGKILL");
          }
        }
        return { tokens, recoveries, served };
      });
      const results = await Promise.all(runs);
      assert(killed, "the victim was never killed");
      const survivor = mine.stages.map((st) => st.nodeId);
      for (const r of results) {
        assertEquals(r.tokens, g.greedy_ids.slice(0, 64), "greedy output survives the replay");
        assertEquals(r.served, survivor, "every request finished on the surviving replica");
      }
      const moved = results.filter((r) => r.recoveries > 0).length;
      // The head spread the requests over both replicas: the victim's share replayed.
      assert(moved >= 2 && moved <= N - 2, `${moved} of ${N} requests replayed`);
      assert(
        results.every((r) => r.recoveries <= 1),
        JSON.stringify(results.map((r) => r.recoveries)) + "\n" +
          head.logs.filter((l) => String(l.msg).includes("failed (")).map((l) => l.msg).join("\n"),
      );
      // The head counted tokens per replica.
      const metrics = await (await fetch(`http://127.0.0.1:${head.metricsPort}/metrics`)).text();
      for (const r of p.replicas) {
        assert(
          metrics.includes(`distributed_llm_replica_requests_total{replica="${r.id}"}`),
          `no requests routed to ${r.id} in metrics`,
        );
      }

      // The broken replica's survivor becomes a standby; one replica serves.
      const after = await waitFor(
        head.transport,
        (i) => replicasLoaded(i, 1) && i.placement!.standby.length === 1,
        "no re-plan to one replica and a standby",
      );
      assertEquals(after.placement!.replicas[0].stages.map((st) => st.nodeId), survivor);
      assertEquals(
        after.placement!.standby,
        other.stages.map((st) => st.nodeId).filter((x) => x !== victimId),
      );

      // A node joins: with the standby it forms a second replica again, and the standing one
      // is not touched (its agents load nothing).
      const loads = (a: AgentProcess) => a.logs.filter((l) => l.msg === "stage loaded").length;
      const survivors = agents.filter((a) => survivor.includes(a.id));
      const before = survivors.map(loads);
      joined = await startAgent({
        id: "e",
        seeds: [head.gossipAddr],
        model: STORIES,
        memoryBudget: "1.6MB",
        extra: ["--replicas", "auto"],
      });
      const regrown = await waitFor(
        head.transport,
        (i) => replicasLoaded(i, 2),
        "no second replica after a node joined",
      );
      const kept = regrown.placement!.replicas.find((r) => r.id === mine.id)!;
      assertEquals(kept.stages.map((st) => st.nodeId), survivor, "the standing replica stayed");
      assertEquals(survivors.map(loads), before, "the standing replica's agents reloaded");
      const fresh = regrown.placement!.replicas.find((r) => r.id !== mine.id)!;
      assertEquals(
        fresh.stages.map((st) => st.nodeId).sort(),
        [...after.placement!.standby, "e"].sort(),
      );
      const out = createClient(InferenceService, joined.transport).generate({
        prompt: g.prompt,
        maxTokens: 16,
        sampler: { temperature: 0 },
      });
      const tokens: number[] = [];
      for await (const m of out) if (!m.finishReason) tokens.push(m.tokenId);
      assertEquals(tokens, g.greedy_ids.slice(0, 16), "the new node heads requests too");
    } finally {
      await stopAll(joined ? [...agents, joined] : agents);
    }
  },
});
