/** gRPC server reflection (cluster/rpc/reflection.ts): what a symbol lookup resolves. */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { createClient, type Transport } from "@connectrpc/connect";
import { createRpcTransport, startRpcServer } from "../../../cluster/rpc/mod.ts";
import {
  registerReflection,
  ServerReflection,
  ServerReflectionV1alpha,
} from "../../../cluster/rpc/reflection.ts";
import {
  InferenceService,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
  type ServerReflectionResponseV1alpha,
  ServerReflectionResponseV1alphaSchema,
} from "../../../proto/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

/** Open one reflection stream with `call` on a real RPC server; its answers, in order. */
async function over<T>(call: (t: Transport) => AsyncIterable<T>): Promise<T[]> {
  const server = await startRpcServer({
    port: 0,
    routes: (r) => registerReflection(r, [InferenceService]),
  });
  const t = await createRpcTransport(`127.0.0.1:${server.port}`, { gzip: false });
  try {
    const out: T[] = [];
    for await (const a of call(t)) out.push(a);
    return out;
  } finally {
    t.close();
    await server.close();
  }
}

/** `requests`, one after another, as a client stream. */
async function* stream(requests: Partial<ServerReflectionRequest>[]) {
  yield* requests as ServerReflectionRequest[];
}

/** Ask grpc.reflection.v1 each of `requests` on one stream; its answers, in order. */
const ask = (requests: Partial<ServerReflectionRequest>[]): Promise<ServerReflectionResponse[]> =>
  over((t) => createClient(ServerReflection, t).serverReflectionInfo(stream(requests)));

/** The same over grpc.reflection.v1alpha, the protocol older clients speak. */
const askV1alpha = (
  requests: Partial<ServerReflectionRequest>[],
): Promise<ServerReflectionResponseV1alpha[]> =>
  over((t) =>
    createClient(ServerReflectionV1alpha, t).serverReflectionInfo(stream(requests) as never)
  );

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

const byFile = (value: string) => ({ messageRequest: { case: "fileByFilename", value } }) as const;
const list = { messageRequest: { case: "listServices", value: "*" } } as const;

Deno.test("both reflection versions list both reflection services, as grpc-go does", async () => {
  const want = [
    "distributed_llm.v1.InferenceService",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
  ];
  const [v1] = await ask([list]);
  const [alpha] = await askV1alpha([list]);
  for (const a of [v1, alpha]) {
    assert(a.messageResponse.case === "listServicesResponse", a.messageResponse.case);
    assertEquals(a.messageResponse.value.service.map((s) => s.name).sort(), want);
  }
});

Deno.test("v1alpha answers list, file_containing_symbol, file_by_filename and NOT_FOUND as v1 does", async () => {
  const requests = [
    list,
    symbol("distributed_llm.v1.InferenceService.Generate"),
    symbol("distributed_llm.v1.GenerateRequest.prompt"),
    byFile("distributed_llm/v1/inference.proto"),
    byFile("grpc/reflection/v1alpha/reflection.proto"),
    symbol("no.Such"),
    byFile("no/such.proto"),
  ];
  const alpha = await askV1alpha(requests);
  assertEquals(alpha.length, requests.length);
  const [listed, generate, prompt, inference, itself, noSymbol, noFile] = alpha;
  assertEquals(listed.messageResponse.case, "listServicesResponse");
  // The request comes back as the client sent it, in the client's package.
  assertEquals(
    listed.originalRequest?.$typeName,
    "grpc.reflection.v1alpha.ServerReflectionRequest",
  );
  assertEquals(listed.originalRequest?.messageRequest, list.messageRequest);
  const names = (a: ServerReflectionResponseV1alpha) => {
    assert(a.messageResponse.case === "fileDescriptorResponse", a.messageResponse.case);
    return a.messageResponse.value.fileDescriptorProto.map((b) =>
      fromBinary(FileDescriptorProtoSchema, b).name
    );
  };
  for (const a of [generate, prompt, inference]) {
    const files = names(a);
    assertEquals(files.at(-1), "distributed_llm/v1/inference.proto");
    // Imports come first, so a client can resolve every message.
    assert(files.includes("distributed_llm/v1/types.proto"), files.join(", "));
  }
  assertEquals(names(itself), ["grpc/reflection/v1alpha/reflection.proto"]);
  for (const a of [noSymbol, noFile]) {
    assert(a.messageResponse.case === "errorResponse", a.messageResponse.case);
    assertEquals(a.messageResponse.value.errorCode, 5);
  }
  // Same answers as v1, byte for byte: one implementation behind both.
  const v1 = await ask(requests);
  for (const [i, a] of alpha.entries()) {
    assertEquals(
      toBinary(ServerReflectionResponseV1alphaSchema, a),
      toBinary(ServerReflectionResponseSchema, v1[i]),
      String(requests[i].messageRequest.value),
    );
  }
});
