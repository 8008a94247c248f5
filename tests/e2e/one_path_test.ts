/**
 * One generation path: the same seeded request (temperature, top-k, top-p, min-p and a
 * repetition penalty, so the tail's penalties and seeded draws are all exercised) gives
 * bit-identical ids from `llmctl generate` run locally (a head over one in-process stage),
 * through 1 agent, through a chain of 3 agents (real processes), and the same text through the
 * OpenAI API.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { startCluster, stopAll, waitForPlacement } from "../support/agents.ts";
import { llmctlJson } from "../support/cli.ts";
import { STORIES } from "../support/paths.ts";

const PROMPT = "Once upon a time, a little fox";
const SAMPLING = [
  ...["--temperature", "0.9", "--seed", "1234", "--top-k", "20"],
  ...["--top-p", "0.95", "--min-p", "0.05", "--repeat-penalty", "1.1"],
];
const request = ["generate", "-p", PROMPT, "-n", "48", ...SAMPLING, "--json"];

/** A greedy completion's log-probabilities (with 3 alternatives each) through the API at `port`. */
async function completionLogprobs(port: number): Promise<unknown> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "stories260K",
      prompt: PROMPT,
      max_tokens: 12,
      temperature: 0,
      logprobs: 3,
    }),
  });
  const body = await res.json();
  assertEquals(res.status, 200, JSON.stringify(body));
  const lp = body.choices[0].logprobs;
  assert(lp.token_logprobs.length === 12, JSON.stringify(lp));
  return { tokens: lp.token_logprobs, top: lp.top_logprobs };
}

Deno.test({
  name: "the same seeded request: identical ids locally, through 1 agent and through 3 agents",
  fn: async () => {
    const local = await llmctlJson([
      ...request,
      ...["--model", STORIES, "--backend", "reference", "--ctx", "256"],
    ]);
    const ids = local.tokens as number[];
    assert(ids.length >= 16, `the local run generated ${ids.length} tokens`);
    assertEquals(local.text !== "", true);

    let soloLogprobs: unknown;
    const solo = await startCluster(["solo"], { model: STORIES, memoryBudget: "16MB" });
    try {
      await waitForPlacement(solo[0], 1);
      const one = await llmctlJson([...request, "--endpoint", `127.0.0.1:${solo[0].rpcPort}`]);
      assertEquals(one.tokens, ids, "1 agent");
      assertEquals(one.text, local.text);
      soloLogprobs = await completionLogprobs(solo[0].httpPort);
    } finally {
      await stopAll(solo);
    }

    const agents = await startCluster(["a", "b", "c"], { model: STORIES, memoryBudget: "1.2MB" });
    try {
      const info = await waitForPlacement(agents[0], 3);
      assertEquals(info.placement!.stages.length, 3, "a chain of 3 stages");
      // The head is an agent in the middle of the chain: its stage forwards to the tail.
      const three = await llmctlJson([...request, "--endpoint", `127.0.0.1:${agents[1].rpcPort}`]);
      assertEquals(three.tokens, ids, "3 agents");
      assertEquals(three.text, local.text);
      // The OpenAI API on another agent: the same settings give the same text.
      const res = await fetch(`http://127.0.0.1:${agents[2].httpPort}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "stories260K",
          prompt: PROMPT,
          max_tokens: 48,
          temperature: 0.9,
          seed: 1234,
          top_k: 20,
          top_p: 0.95,
          min_p: 0.05,
          repeat_penalty: 1.1,
        }),
      });
      const body = await res.json();
      assertEquals(res.status, 200, JSON.stringify(body));
      assertEquals(body.choices[0].text, local.text, "OpenAI API");
      // Log-probabilities too, from a head whose tail is another agent: before, a tail in the
      // head's own process gave them in double precision and one across the wire in float.
      const tail = info.placement!.stages.at(-1)!.nodeId;
      const head = agents.find((a) => a.id !== tail)!;
      assertEquals(await completionLogprobs(head.httpPort), soloLogprobs, "logprobs");
    } finally {
      await stopAll(agents);
    }
  },
});
