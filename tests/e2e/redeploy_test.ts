/**
 * Replacing or undeploying the model while requests run on it, with real agent processes: a
 * request admitted on one model finishes on it (its stages retire: they serve the sessions open
 * on them, StageRoom.retire), decoded with that model's vocabulary, while the next request runs
 * on the model deployed since; after an undeploy the API says what happened and how to serve a
 * model again.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { type AgentProcess, startAgent, stopAll, waitForPlacement } from "../support/agents.ts";
import { llmctl } from "../support/cli.ts";
import { FIXTURES, STORIES } from "../support/paths.ts";

/** A llama with llama 3's 128 256-token vocabulary: its ids run far past stories260K's 512. */
const LLAMA3 = `${FIXTURES}/models/bpe-llama3-f16.gguf`;
const KEY = "sk-redeploy";

async function post(a: AgentProcess, body: Record<string, unknown>) {
  const res = await fetch(`http://127.0.0.1:${a.httpPort}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json(), at: performance.now() };
}

Deno.test({
  name:
    "models deploy while a request runs: it finishes on its model; the next runs on the new one",
  fn: async () => {
    const agents: AgentProcess[] = [];
    try {
      const extra = ["--api-key", KEY, "--context-size", "4096", "--max-sessions", "4"];
      agents.push(await startAgent({ id: "ra", model: LLAMA3, extra }));
      agents.push(
        await startAgent({ id: "rb", model: LLAMA3, extra, seeds: [agents[0].gossipAddr] }),
      );
      const [a] = agents;
      await waitForPlacement(a, 2);
      // Greedy, so the run the deploy interrupts must answer the same text. Top logprobs make
      // each token's sampling read the whole 128K vocabulary: a run long enough for a deploy.
      const body = {
        model: "bpe-llama3-f16",
        prompt: "Once upon a time",
        max_tokens: 500,
        temperature: 0,
        logprobs: 5,
      };
      let t0 = performance.now();
      const alone = await post(a, body);
      assertEquals(alone.status, 200, JSON.stringify(alone.body));
      console.log(`alone: ${Math.round(alone.at - t0)} ms`);
      t0 = performance.now();
      const running = post(a, body);
      await new Promise((r) => setTimeout(r, 100));
      const deploy = await llmctl(["models", "deploy", STORIES, "-e", `127.0.0.1:${a.rpcPort}`]);
      const deployedAt = performance.now();
      assertEquals(deploy.code, 0, deploy.stderr);
      const r = await running;
      console.log(
        `deployed after ${Math.round(deployedAt - t0)} ms, request ${Math.round(r.at - t0)} ms`,
      );
      // Before: a 500 "token id … is outside the vocabulary (0..511)" — the new model's
      // vocabulary read the old model's tokens — as soon as the new model was adopted.
      assertEquals(r.status, 200, JSON.stringify(r.body));
      assert(r.at > deployedAt, "the request ended before the deploy: make it longer");
      assertEquals(r.body.choices[0].text, alone.body.choices[0].text);
      assertEquals(r.body.usage.completion_tokens, 500, JSON.stringify(r.body.usage));
      // The new model serves the next request; the old one is no longer known.
      const next = await post(a, {
        model: "stories260K",
        prompt: "Once upon a time",
        max_tokens: 8,
      });
      assertEquals(next.status, 200, JSON.stringify(next.body));
      const old = await post(a, { model: "bpe-llama3-f16", prompt: "Hi", max_tokens: 8 });
      assertEquals(old.status, 404, JSON.stringify(old.body));

      // Back to the first model, then undeploy it under a running request: it finishes too.
      const back = await llmctl(["models", "deploy", LLAMA3, "-e", `127.0.0.1:${a.rpcPort}`]);
      assertEquals(back.code, 0, back.stderr);
      await waitForPlacement(a, 2);
      // stories260K is only cached now: not listed as a model waiting for its layers (before:
      // "0 layers, not ready" and "no node hosts its layers yet").
      const list = await llmctl(["models", "list", "-e", `127.0.0.1:${a.rpcPort}`]);
      assertEquals(list.code, 0, list.stderr);
      assert(
        /stories260K\.gguf@\S+: not deployed \(undeployed or replaced/.test(list.stdout),
        list.stdout,
      );
      assert(/bpe-llama3-f16\.gguf@\S+: 2 layers, ready/.test(list.stdout), list.stdout);
      assert(!list.stdout.includes("no node hosts its layers yet"), list.stdout);
      // Streamed, so the undeploy comes once the request has its first token.
      const running2 = await fetch(`http://127.0.0.1:${a.httpPort}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
        body: JSON.stringify({ ...body, stream: true }),
      });
      assertEquals(running2.status, 200);
      const reader = running2.body!.pipeThrough(new TextDecoderStream()).getReader();
      let sse = "";
      while (!sse.includes("data: {")) sse += (await reader.read()).value ?? "";
      const undeploy = await llmctl(["models", "undeploy", "-e", `127.0.0.1:${a.rpcPort}`]);
      assertEquals(undeploy.code, 0, undeploy.stderr);
      const undeployedAt = performance.now();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        sse += value;
      }
      const endedAt = performance.now();
      const chunks = sse.split("\n").filter((l) => l.startsWith("data: {")).map((l) =>
        JSON.parse(l.slice(6))
      );
      // Before: an in-band error "Cannot read properties of undefined (reading 'tokenizer')".
      const failed = chunks.find((c) => c.error);
      assert(!failed, JSON.stringify(failed));
      assert(endedAt - undeployedAt > 100, "the request ended before the undeploy: make it longer");
      assertEquals(
        chunks.map((c) => c.choices?.[0]?.text ?? "").join(""),
        alone.body.choices[0].text,
      );
      assertEquals(
        chunks.findLast((c) => c.choices?.[0]?.finish_reason)?.choices[0].finish_reason,
        "length",
      );
      // Then nothing is served: a 503 that says what happened and how to serve a model again
      // (before: a 400 "this agent serves no model (start it with --model)").
      const none = await post(a, { model: "bpe-llama3-f16", prompt: "Hi", max_tokens: 8 });
      assertEquals(none.status, 503, JSON.stringify(none.body));
      const msg = none.body.error.message as string;
      assert(msg.includes("bpe-llama3-f16.gguf was undeployed"), msg);
      assert(msg.includes("llmctl models deploy"), msg);
    } finally {
      await stopAll(agents);
    }
  },
});
