/**
 * A GPU that disappears mid-service (device lost) is not a crash: the agent rebuilds its stage
 * on the WASM CPU backend, re-announces it, and a request in flight completes with the same
 * greedy tokens after the head replays it. Runs on any WebGPU adapter (llvmpipe in CI).
 *
 * The one e2e test that runs its agent in this process rather than as a child process: losing
 * the device on purpose needs a handle on the agent's WebGPU backend.
 */
import { createClient } from "@connectrpc/connect";
import { Agent } from "../../cluster/agent.ts";
import { resolveConfig } from "../../cluster/agent_config.ts";
import { createRpcTransport } from "../../cluster/rpc/mod.ts";
import type { WebGPUBackend } from "../../kernels/webgpu/backend.ts";
import { probeAdapter } from "../../kernels/webgpu/mod.ts";
import { InferenceService } from "../../proto/mod.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { FIXTURES, REPO } from "../support/paths.ts";

const probe = await probeAdapter();
const golden = JSON.parse(Deno.readTextFileSync(`${FIXTURES}/golden/stories260K__once.json`));

Deno.test({
  name:
    "device lost on a WebGPU agent: it falls back to WASM and the request completes identically",
  ignore: !probe.available,
  fn: async () => {
    const cfg = resolveConfig([["flag", {
      nodeId: "gpu",
      rpcPort: 0,
      gossipPort: 0,
      metricsPort: 0,
      httpPort: 0,
      model: `${REPO}/models/stories260K.gguf`,
      backend: "webgpu",
      gossipPreset: "local",
      contextSize: 256,
      maxSessions: 4,
      memoryBudget: "64MB",
    }]]);
    const logs: string[] = [];
    const agent = await Agent.start(cfg, (level, msg) => logs.push(`${level} ${msg}`));
    const transport = await createRpcTransport(`127.0.0.1:${agent.rpcPort}`);
    try {
      for (let i = 0; i < 100 && !agent.hosted; i++) await new Promise((r) => setTimeout(r, 100));
      assertEquals(agent.backend.name, "webgpu");
      const info = async () =>
        (await (await fetch(`http://127.0.0.1:${agent.metricsPort}/metrics`)).text())
          .split("\n").find((l) => l.startsWith("distributed_llm_node_backend_info{")) ?? "";
      assert((await info()).includes('backend="webgpu"'), await info());
      const client = createClient(InferenceService, transport);
      const tokens: number[] = [];
      let recoveries = -1;
      for await (
        const m of client.generate({
          prompt: golden.prompt,
          maxTokens: 32,
          sampler: { temperature: 0 },
        })
      ) {
        if (m.finishReason) {
          recoveries = m.usage?.recoveries ?? -1;
          break;
        }
        tokens.push(m.tokenId);
        if (tokens.length === 8) (agent.backend as WebGPUBackend).loseDevice();
      }
      assertEquals(tokens, golden.greedy_ids.slice(0, 32));
      assert(recoveries >= 1, `the head replayed after the device loss (recoveries ${recoveries})`);
      assertEquals(agent.backend.name, "wasm");
      const after = await info();
      assert(after.includes('backend="wasm"') && after.includes("fell back from WebGPU"), after);
      assert(logs.some((l) => l.includes("falling back to the WASM CPU backend")), logs.join("\n"));
    } finally {
      transport.close();
      await agent.stop();
    }
  },
});
