/**
 * The standard gRPC health service on a real agent process (issue 16, item 14): what
 * grpc-health-probe and Kubernetes `grpc:` probes call.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { GrpcHealth, GrpcHealthStatus } from "../../proto/mod.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { startAgent, stopAll } from "../support/agents.ts";
import { REPO } from "../support/paths.ts";

const STORIES = `${REPO}/models/stories260K.gguf`;

Deno.test("grpc.health.v1.Health answers for the agent and for InferenceService", async () => {
  const agent = await startAgent({ id: "solo", model: STORIES, memoryBudget: "8MB" });
  try {
    const health = createClient(GrpcHealth, agent.transport);
    assertEquals((await health.check({ service: "" })).status, GrpcHealthStatus.SERVING);
    assertEquals(
      (await health.check({ service: "distributed_llm.v1.NodeService" })).status,
      GrpcHealthStatus.SERVING,
    );
    // Ready once every layer is loaded; a probe can wait for it.
    let inference = GrpcHealthStatus.UNKNOWN;
    for (let i = 0; i < 100 && inference !== GrpcHealthStatus.SERVING; i++) {
      inference = (await health.check({ service: "distributed_llm.v1.InferenceService" })).status;
      if (inference !== GrpcHealthStatus.SERVING) await new Promise((r) => setTimeout(r, 100));
    }
    assertEquals(inference, GrpcHealthStatus.SERVING);
    const unknown = await health.check({ service: "no.Such" }).then(() => null, (e) => e);
    assert(unknown instanceof ConnectError && unknown.code === Code.NotFound, String(unknown));
    for await (const m of health.watch({ service: "" })) {
      assertEquals(m.status, GrpcHealthStatus.SERVING);
      break;
    }
  } finally {
    await stopAll([agent]);
  }
});
