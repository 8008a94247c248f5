/**
 * A head frozen (SIGSTOP) mid-generation long enough for gossip to declare it dead, then
 * continued: its stages closed its sessions because their opener was gone, which is no failure
 * of theirs. The head must replay on the same healthy stages once it is readmitted, not blame
 * them and wait out its recovery timeout for layers nobody else can host.
 */
import { createClient } from "@connectrpc/connect";
import { DiscoveryService, InferenceService, NodeState } from "../../proto/mod.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { startCluster, stopAll, waitForPlacement } from "../support/agents.ts";
import { FIXTURES, STORIES } from "../support/paths.ts";

const golden = (name: string) =>
  JSON.parse(Deno.readTextFileSync(`${FIXTURES}/golden/${name}.json`));

/** Poll until `ok` holds, up to `ms`; false when it never did. */
async function eventually(ok: () => Promise<boolean>, ms: number): Promise<boolean> {
  for (const until = Date.now() + ms; Date.now() < until;) {
    if (await ok().catch(() => false)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

Deno.test({
  name:
    "a head frozen until gossip declares it dead, then continued, replays on its healthy stages: same ids, no slots held",
  fn: async () => {
    const g = golden("stories260K__once");
    // No two agents hold the model: no stage's layers can move elsewhere, so a stage the head
    // wrongly blamed would fail the request after the recovery timeout.
    const agents = await startCluster(["a", "b", "c"], { model: STORIES, memoryBudget: "1.2MB" });
    try {
      const info = await waitForPlacement(agents[0], 3);
      const head = agents.find((a) => a.id === info.placement!.stages[0].nodeId)!;
      const others = agents.filter((a) => a !== head);
      const tokens: number[] = [];
      let recoveries = -1;
      let error = "";
      try {
        for await (
          const m of createClient(InferenceService, head.transport).generate({
            prompt: g.prompt,
            maxTokens: 64,
            sampler: { temperature: 0 },
          })
        ) {
          if (m.finishReason) {
            recoveries = m.usage?.recoveries ?? 0;
            break;
          }
          tokens.push(m.tokenId);
          if (tokens.length === 10) {
            Deno.kill(head.child.pid, "SIGSTOP");
            try {
              // Frozen until the others have declared it dead (and closed its sessions).
              for (const o of others) {
                const view = createClient(DiscoveryService, o.transport);
                const dead = await eventually(async () => {
                  const nodes = (await view.getClusterInfo({})).nodes;
                  const state = nodes.find((n) => n.id === head.id)?.state;
                  return state === undefined || state === NodeState.DEAD;
                }, 20_000);
                assert(dead, `${o.id} never declared ${head.id} dead`);
              }
            } finally {
              Deno.kill(head.child.pid, "SIGCONT");
            }
          }
        }
      } catch (e) {
        error = String(e);
      }
      assertEquals(error, "", "the request failed");
      assertEquals(tokens, g.greedy_ids.slice(0, 64));
      assert(recoveries >= 1, `recoveries: ${recoveries}`);
      // The stages the head came back to were not blamed for its absence.
      const blamed = head.logs.filter((l) => /stage on \S+ failed/.test(String(l.msg)));
      assertEquals(blamed.map((l) => l.msg), []);
      // Every agent freed the request's KV caches and admission slots.
      for (const a of agents) {
        const freed = await eventually(async () => {
          const text = await (await fetch(`http://127.0.0.1:${a.metricsPort}/metrics`)).text();
          return /^distributed_llm_kv_cache_slots\{[^}]*state="used"[^}]*\} 0$/m.test(text) &&
            /^distributed_llm_requests_active(?:\{[^}]*\})? 0$/m.test(text);
        }, 15_000);
        assert(freed, `${a.id} still holds a session or a request slot`);
      }
    } finally {
      await stopAll(agents);
    }
  },
});
