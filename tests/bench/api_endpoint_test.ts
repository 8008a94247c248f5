/**
 * `llmctl bench api -- --endpoint <url>` load-tests a running agent instead of starting its own
 * (issue 16 item 17): the numbers come from the given endpoint, through its API key.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { startAgent, stopAll, waitForPlacement } from "../support/agents.ts";
import { llmctl } from "../support/cli.ts";
import { REPO } from "../support/paths.ts";

Deno.test("bench api --endpoint measures a running agent (through llmctl bench)", async () => {
  const agent = await startAgent({
    id: "bench-target",
    model: `${REPO}/models/stories260K.gguf`,
    memoryBudget: "64MB",
    extra: ["--api-key", "sk-bench"],
  });
  try {
    await waitForPlacement(agent, 1);
    const endpoint = `http://127.0.0.1:${agent.httpPort}`;
    const args = ["--seconds", "1", "--warmup", "0", "--clients", "1,2", "--max-tokens", "2"];
    const metrics = `http://127.0.0.1:${agent.metricsPort}/metrics`;
    const r = await llmctl([
      "bench",
      "api",
      "--",
      "--endpoint",
      endpoint,
      "--api-key",
      "sk-bench",
      "--metrics",
      metrics,
      ...args,
    ]);
    assertEquals(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assertEquals(lines.length, 3, r.stdout);
    for (const l of lines) assertEquals([l.endpoint, l.backend], [endpoint, "remote"]);
    assertEquals(lines.slice(0, 2).map((l) => l.clients), [1, 2]);
    assertEquals(lines[0].model, "stories260K.gguf");
    assert(lines[0].requests > 0 && lines[0].tokens_per_second > 0, r.stdout);
    // Batch sizes from the agent's /metrics: one client's passes run one sequence each (its
    // prompt pass and its decode passes), two clients' passes up to two.
    const [one, two] = lines;
    assert(one.passes.passes > 0, r.stdout);
    assertEquals(one.passes.sequences_per_pass_mean, 1, r.stdout);
    assert(one.passes.rows_per_pass_mean >= 1, r.stdout);
    assert(
      two.passes.sequences_per_pass_mean >= 1 && two.passes.sequences_per_pass_mean <= 2,
      r.stdout,
    );
    assert(lines[2].summary, r.stdout);
    // Without the key the agent refuses, and the bench says so instead of printing numbers.
    const denied = await llmctl(["bench", "api", "--", "--endpoint", endpoint, ...args]);
    assert(denied.code !== 0, denied.stdout);
    assert(/HTTP 401/.test(denied.stderr), denied.stderr);
  } finally {
    await stopAll([agent]);
  }
});
