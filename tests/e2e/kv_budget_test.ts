/**
 * The tester's case at a small scale: 3 agents with a small --memory-budget and the default-like
 * --max-sessions 64, and many concurrent long /v1/completions. Before, every request opened its
 * session and agent k1's KV caches grew to twice its whole budget; now each stage's weights plus
 * KV caches stay within the budget, and the requests beyond it wait for room at their head and
 * complete, with the same text (before the third bug hunt they got a 429, or an error inside a
 * stream already answered 200, although their head had admitted them).
 */
import { assert, assertEquals } from "../support/assert.ts";
import { startCluster, stopAll, waitForPlacement } from "../support/agents.ts";
import { STORIES } from "../support/paths.ts";

const BUDGET = 1_600_000;
const REQUESTS = 16;
const MAX_TOKENS = 300;

/** The weights and KV cache bytes an agent's /metrics reports now. */
async function memory(port: number): Promise<{ weights: number; kv: number }> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const read = (kind: string) =>
    Number(
      new RegExp(`^distributed_llm_model_memory_bytes\\{[^}]*kind="${kind}"[^}]*\\} (\\S+)$`, "m")
        .exec(text)?.[1] ?? NaN,
    );
  return { weights: read("weights"), kv: read("kv_cache") };
}

Deno.test({
  name:
    "many long requests on a small budget: KV stays within it, the rest wait for room and finish",
  fn: async () => {
    const agents = await startCluster(["k1", "k2", "k3"], {
      model: STORIES,
      memoryBudget: String(BUDGET),
      extra: ["--context-size", "512", "--max-sessions", "64"],
    });
    let watching = true;
    const peak = agents.map(() => 0);
    try {
      const info = await waitForPlacement(agents[0], 3);
      assertEquals(info.placement!.stages.length, 3, "the model is split over the 3 agents");
      // What the weights and KV caches of each agent hold together, every 50 ms.
      const watch = (async () => {
        while (watching) {
          for (const [i, a] of agents.entries()) {
            const m = await memory(a.metricsPort).catch(() => ({ weights: 0, kv: 0 }));
            peak[i] = Math.max(peak[i], m.weights + m.kv);
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      const head = agents[0];
      const statuses: number[] = [];
      const complete = async (): Promise<string> => {
        for (;;) {
          const res = await fetch(`http://127.0.0.1:${head.httpPort}/v1/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({
              model: "stories260K",
              prompt: "Once upon a time",
              max_tokens: MAX_TOKENS,
              temperature: 0,
            }),
          });
          statuses.push(res.status);
          if (res.status === 429 || res.status === 503) {
            const body = await res.text();
            const after = Number(res.headers.get("retry-after"));
            assert(after > 0, `a ${res.status} without Retry-After: ${body}`);
            await new Promise((r) => setTimeout(r, after * 1000));
            continue;
          }
          assertEquals(res.status, 200, await res.clone().text());
          const j = await res.json();
          assertEquals(j.usage.completion_tokens, MAX_TOKENS);
          return j.choices[0].text;
        }
      };
      const texts = await Promise.all(Array.from({ length: REQUESTS }, complete));
      watching = false;
      await watch;
      for (const [i, a] of agents.entries()) {
        assert(peak[i] > 0, `${a.id} reported no memory`);
        assert(
          peak[i] <= BUDGET,
          `${a.id} held ${peak[i]} bytes of weights and KV, over ${BUDGET}`,
        );
        assertEquals(a.unhandled, []);
      }
      assertEquals(new Set(texts).size, 1, "greedy requests answer alike, refused or not");
      assertEquals(statuses.filter((x) => x !== 200), [], "none was refused: they waited");
      const refused = agents.flatMap((a) =>
        a.logs.filter((l) => l.msg === "stage refused sessions as busy")
      );
      assert(
        refused.length > 0 && refused.every((l) => Number(l.kv_bytes) > 0),
        "the stages did refuse sessions for KV room (the head waited those out)",
      );
    } finally {
      watching = false;
      await stopAll(agents);
    }
  },
});
