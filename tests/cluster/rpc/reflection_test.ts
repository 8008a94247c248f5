/** gRPC server reflection (cluster/rpc/reflection.ts): what a symbol lookup resolves. */
import { createClient } from "@connectrpc/connect";
import { createRpcTransport, startRpcServer } from "../../../cluster/rpc/mod.ts";
import { reflectionService, ServerReflection } from "../../../cluster/rpc/reflection.ts";
import {
  InferenceService,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
} from "../../../proto/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

/** Ask the reflection service each of `requests` on one stream; its answers, in order. */
async function ask(
  requests: Partial<ServerReflectionRequest>[],
): Promise<ServerReflectionResponse[]> {
  const server = await startRpcServer({
    port: 0,
    routes: (r) => r.service(ServerReflection, reflectionService([InferenceService])),
  });
  const t = await createRpcTransport(`127.0.0.1:${server.port}`, { gzip: false });
  try {
    const out: ServerReflectionResponse[] = [];
    const input = (async function* () {
      yield* requests as ServerReflectionRequest[];
    })();
    for await (const a of createClient(ServerReflection, t).serverReflectionInfo(input)) {
      out.push(a);
    }
    return out;
  } finally {
    t.close();
    await server.close();
  }
}

const symbol = (value: string) =>
  ({ messageRequest: { case: "fileContainingSymbol", value } }) as const;

Deno.test("file_containing_symbol resolves fields, oneofs and enum values as grpc-go does", async () => {
  const names = [
    "distributed_llm.v1.GenerateRequest.prompt",
    "distributed_llm.v1.FINISH_REASON_STOP",
    "distributed_llm.v1.ForwardResponse.result",
    "distributed_llm.v1.DTYPE_F16",
    "distributed_llm.v1.InferenceService.Generate",
  ];
  const answers = await ask(names.map(symbol));
  for (const [i, a] of answers.entries()) {
    assertEquals(a.messageResponse.case, "fileDescriptorResponse", names[i]);
  }
  // Not symbols: a field of no message, a value in the enum's scope (protobuf puts values beside
  // their enum, not inside it).
  for (
    const name of [
      "distributed_llm.v1.GenerateRequest.nope",
      "distributed_llm.v1.FinishReason.FINISH_REASON_STOP",
    ]
  ) {
    const [a] = await ask([symbol(name)]);
    assert(a.messageResponse.case === "errorResponse", name);
    assertEquals(a.messageResponse.value.errorCode, 5, name);
  }
});

Deno.test("all_extension_numbers_of_type answers a known message with none, an unknown NOT_FOUND", async () => {
  const [known, unknown, ext] = await ask([
    {
      messageRequest: {
        case: "allExtensionNumbersOfType",
        value: "distributed_llm.v1.GenerateRequest",
      },
    },
    { messageRequest: { case: "allExtensionNumbersOfType", value: "distributed_llm.v1.Nope" } },
    {
      messageRequest: {
        case: "fileContainingExtension",
        value: { containingType: "distributed_llm.v1.GenerateRequest", extensionNumber: 100 },
      },
    } as never,
  ]);
  assert(known.messageResponse.case === "allExtensionNumbersResponse", known.messageResponse.case);
  assertEquals(known.messageResponse.value.baseTypeName, "distributed_llm.v1.GenerateRequest");
  assertEquals(known.messageResponse.value.extensionNumber, []);
  assert(unknown.messageResponse.case === "errorResponse", unknown.messageResponse.case);
  assertEquals(unknown.messageResponse.value.errorCode, 5);
  assert(ext.messageResponse.case === "errorResponse", ext.messageResponse.case);
  assertEquals(ext.messageResponse.value.errorCode, 5);
});
