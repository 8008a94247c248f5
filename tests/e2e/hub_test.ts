/**
 * An agent started with `--model hf:…` (a real agent process) pulls the model from a local fake
 * Hub (tests/support/fake_hub.ts; huggingface.co is not reachable from tests) into its
 * `--cache-dir`, serves a generation that matches llama.cpp's, never logs the token, and starts
 * again from its cache with the Hub stopped.
 */
import { FakeHub } from "../support/fake_hub.ts";
import {
  type AgentProcess,
  generate,
  startAgent,
  stopAll,
  waitForPlacement,
} from "../support/agents.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { FIXTURES } from "../support/paths.ts";
import { llmctl } from "../support/cli.ts";
import { createClient } from "@connectrpc/connect";
import { DiscoveryService, NodeState } from "../../proto/mod.ts";

const TOKEN = "hf_e2eTokenNeverLogged0123456789abcdefghij";

Deno.test("an agent with --model hf:… pulls the model, serves a generation, and restarts from its cache offline", async () => {
  const hub = new FakeHub();
  await hub.start();
  const cache = await Deno.makeTempDir({ prefix: "agent-hub-" });
  const golden = JSON.parse(await Deno.readTextFile(`${FIXTURES}/golden/stories260K__once.json`));
  const agents: AgentProcess[] = [];
  try {
    const env = { HF_ENDPOINT: hub.url, HF_TOKEN: TOKEN };
    agents.push(
      await startAgent({
        id: "a",
        model: "hf:test-org/stories260K-GGUF",
        extra: ["--cache-dir", cache],
        env,
      }),
    );
    await waitForPlacement(agents[0], 1);
    const out = await generate(agents[0], golden.prompt, golden.n_predict);
    assertEquals(out.tokens, golden.greedy_ids);
    const started = agents[0].logs.find((l) => l.msg === "agent started")!;
    const commit = hub.commit("test-org/stories260K-GGUF");
    assertEquals(
      started.model,
      `${cache}/hub/test-org/stories260K-GGUF/${commit}/stories260K.gguf`,
    );
    assertEquals(started.model_ref, "hf:test-org/stories260K-GGUF");
    assert(
      agents[0].logs.some((l) => l.msg === "pulling the model from the Hub"),
      "the pull is logged",
    );
    assert(
      hub.seen.some((q) => q.authorization === `Bearer ${TOKEN}`),
      "the token reached the Hub",
    );
    assert(!agents[0].stderr.join("\n").includes(TOKEN), "the token is never logged");
    await stopAll(agents.splice(0));

    // The Hub gone: the agent starts from its cache and says why it did not ask.
    await hub.stop();
    agents.push(
      await startAgent({
        id: "b",
        model: "hf:test-org/stories260K-GGUF",
        extra: ["--cache-dir", cache],
        env,
      }),
    );
    await waitForPlacement(agents[0], 1);
    const again = await generate(agents[0], golden.prompt, 8);
    assertEquals(again.tokens, golden.greedy_ids.slice(0, 8));
    assert(
      agents[0].logs.some((l) => l.msg === "the Hub is not used; serving the cached model"),
      agents[0].stderr.join("\n"),
    );
  } finally {
    await stopAll(agents);
    await hub.stop();
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("models deploy hf:… --from-here pulls the file here and serves it to agents that hold nothing", async () => {
  const hub = new FakeHub();
  await hub.start();
  const dirs = [0, 1, 2].map(() => Deno.makeTempDirSync({ prefix: "hub-deploy-" }));
  const golden = JSON.parse(await Deno.readTextFile(`${FIXTURES}/golden/stories260K__once.json`));
  const agents: AgentProcess[] = [];
  try {
    for (const [i, id] of ["a", "b"].entries()) {
      agents.push(
        await startAgent({
          id,
          seeds: i ? [agents[0].gossipAddr] : [],
          memoryBudget: "2MB",
          extra: ["--no-model", "--cache-dir", dirs[i]],
        }),
      );
    }
    // Both members in a's view before the deploy plans over them.
    const d = createClient(DiscoveryService, agents[0].transport);
    const since = Date.now();
    while (Date.now() - since < 15_000) {
      const info = await d.getClusterInfo({});
      if (info.nodes.filter((n) => n.state === NodeState.ALIVE).length === 2) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const r = await llmctl([
      "--endpoint",
      `127.0.0.1:${agents[0].rpcPort}`,
      "models",
      "deploy",
      "hf:test-org/stories260K-GGUF/stories260K.gguf",
      "--from-here",
    ], { HF_ENDPOINT: hub.url, DLLM_CACHE_DIR: dirs[2] });
    assertEquals(r.code, 0, r.stderr + r.stdout);
    assert(r.stdout.includes("deployed stories260K.gguf@"), r.stdout);
    assert(r.stderr.includes("pulling stories260K.gguf"), r.stderr);
    await waitForPlacement(agents[0], 2);
    const out = await generate(agents[0], golden.prompt, golden.n_predict);
    assertEquals(out.tokens, golden.greedy_ids);
  } finally {
    await stopAll(agents);
    await hub.stop();
    for (const d of dirs) Deno.removeSync(d, { recursive: true });
  }
});

Deno.test("an agent given a malformed hf: reference exits 2 naming it", async () => {
  const child = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../../cli/agent.ts", import.meta.url).pathname,
      "--model",
      "hf:only-owner",
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  assertEquals(child.code, 2);
  const err = new TextDecoder().decode(child.stderr);
  assert(err.includes('invalid Hub reference "hf:only-owner"'), err);
});
