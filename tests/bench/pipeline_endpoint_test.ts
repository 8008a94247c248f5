/**
 * `llmctl bench pipeline -- --endpoint host:port` measures a running cluster (issue 16 item 17):
 * served decode through its head and per-hop overhead over its own chain, read from the
 * placement, with no agents of its own.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { startCluster, stopAll, waitForPlacement } from "../support/agents.ts";
import { llmctl } from "../support/cli.ts";
import { REPO } from "../support/paths.ts";

Deno.test("bench pipeline --endpoint measures a running chain of agents", async () => {
  // 1.2 MB each: stories260K's weights and KV need more than one agent.
  const agents = await startCluster(["bp-a", "bp-b", "bp-c"], {
    model: `${REPO}/models/stories260K.gguf`,
    memoryBudget: "1.2MB",
  });
  try {
    const info = await waitForPlacement(agents[0], 3);
    const stages = info.placement!.stages;
    assert(stages.length >= 2, JSON.stringify(stages));
    const r = await llmctl([
      "bench",
      "pipeline",
      "--",
      "--endpoint",
      `127.0.0.1:${agents[1].rpcPort}`,
      "--tokens",
      "8",
      "--reps",
      "2",
    ]);
    assertEquals(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
    assertEquals(out.in_process_decode_tokens_per_second, null);
    assert(out.served_decode_tokens_per_second > 0, r.stdout);
    assertEquals(out.hops_measured, 16);
    assert(out.hop_ms_p50 >= 0, r.stdout);
    assertEquals(out.same_ids, true);
    assertEquals(out.stages.length, stages.length);
  } finally {
    await stopAll(agents);
  }
});
