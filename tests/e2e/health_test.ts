/**
 * The standard gRPC health and reflection services on a real agent process (issue 16, item 14):
 * what grpc-health-probe, Kubernetes `grpc:` probes and grpcurl without .proto files call.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { GrpcHealth, GrpcHealthStatus, ServerReflection } from "../../proto/mod.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { startAgent, stopAll } from "../support/agents.ts";
import { STORIES } from "../support/paths.ts";

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

Deno.test("server reflection lists the services and sends their descriptors", async () => {
  const agent = await startAgent({ id: "solo", model: STORIES, memoryBudget: "8MB" });
  try {
    const requests = [
      { messageRequest: { case: "listServices" as const, value: "*" } },
      {
        messageRequest: {
          case: "fileContainingSymbol" as const,
          value: "distributed_llm.v1.NodeService.GetMetrics",
        },
      },
      { messageRequest: { case: "fileContainingSymbol" as const, value: "no.Such" } },
    ];
    const answers = [];
    for await (
      const a of createClient(ServerReflection, agent.transport).serverReflectionInfo(
        (async function* () {
          for (const r of requests) yield r;
        })(),
      )
    ) {
      answers.push(a);
    }
    assertEquals(answers.length, 3);
    const list = answers[0].messageResponse;
    assert(list.case === "listServicesResponse", list.case);
    const names = list.value.service.map((s) => s.name);
    for (
      const n of [
        "distributed_llm.v1.NodeService",
        "distributed_llm.v1.InferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        // Older clients (grpcurl before 1.8.8, grpc_cli, Python's reflection client) speak this.
        "grpc.reflection.v1alpha.ServerReflection",
      ]
    ) assert(names.includes(n), `${n} not listed: ${names}`);
    const files = answers[1].messageResponse;
    assert(files.case === "fileDescriptorResponse", files.case);
    const protos = files.value.fileDescriptorProto.map((b) =>
      fromBinary(FileDescriptorProtoSchema, b)
    );
    const node = protos.find((p) => p.name === "distributed_llm/v1/node.proto");
    assert(node, protos.map((p) => p.name).join(", "));
    assert(node.service.some((s) => s.name === "NodeService"), "NodeService not described");
    // Its imports come along (types.proto), so a client can resolve every message.
    assert(protos.some((p) => p.name === "distributed_llm/v1/types.proto"), "imports missing");
    assertEquals(answers[2].messageResponse.case, "errorResponse");
  } finally {
    await stopAll([agent]);
  }
});
