/**
 * gRPC server reflection (grpc.reflection.v1.ServerReflection, and its older twin
 * grpc.reflection.v1alpha.ServerReflection) on the agent's RPC port: lists the services and
 * sends their file descriptors, so `grpcurl host:7950 list` and `grpcurl … describe` work
 * without our .proto files, with grpcurl before 1.8.8, grpc_cli and grpcio-reflection too.
 *
 * @module
 */
import {
  create,
  type DescEnum,
  type DescFile,
  type DescMessage,
  type DescService,
  fromBinary,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import {
  ServerReflection,
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  ServerReflectionRequestV1alphaSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
  ServerReflectionResponseV1alphaSchema,
  ServerReflectionV1alpha,
} from "../../proto/mod.ts";

export { ServerReflection, ServerReflectionV1alpha };

/** Every file `files` need, dependencies first. */
function closure(files: DescFile[]): DescFile[] {
  const out: DescFile[] = [];
  const seen = new Set<string>();
  const visit = (f: DescFile) => {
    if (seen.has(f.name)) return;
    seen.add(f.name);
    f.dependencies.forEach(visit);
    out.push(f);
  };
  files.forEach(visit);
  return out;
}

/**
 * Fully-qualified symbol → the file that defines it: messages with their fields and oneofs,
 * enums with their values (named in the enum's parent scope, as protobuf scopes them), services
 * and methods. grpc-go and grpc-java resolve fields and enum values too, and tools ask for them
 * (`grpcurl describe distributed_llm.v1.GenerateRequest.prompt`).
 */
function symbols(files: DescFile[]): Map<string, DescFile> {
  const out = new Map<string, DescFile>();
  const enumeration = (f: DescFile, e: DescEnum) => {
    out.set(e.typeName, f);
    const scope = e.typeName.slice(0, e.typeName.lastIndexOf("."));
    for (const v of e.values) out.set(scope ? `${scope}.${v.name}` : v.name, f);
  };
  const message = (f: DescFile, m: DescMessage) => {
    out.set(m.typeName, f);
    for (const field of m.fields) out.set(`${m.typeName}.${field.name}`, f);
    for (const o of m.oneofs) out.set(`${m.typeName}.${o.name}`, f);
    m.nestedMessages.forEach((n) => message(f, n));
    m.nestedEnums.forEach((e) => enumeration(f, e));
  };
  for (const f of files) {
    f.messages.forEach((m) => message(f, m));
    f.enums.forEach((e) => enumeration(f, e));
    for (const s of f.services) {
      out.set(s.typeName, f);
      for (const m of s.methods) out.set(`${s.typeName}.${m.name}`, f);
    }
  }
  return out;
}

/** Every message of `messages`, nested ones too. */
function* nestedMessages(messages: DescMessage[]): Iterable<DescMessage> {
  for (const m of messages) {
    yield m;
    yield* nestedMessages(m.nestedMessages);
  }
}

/**
 * The v1 answer to each reflection request about `services`. Both versions list both reflection
 * services, as grpc-go's `reflection.Register` serves and lists the two.
 */
function answerer(
  services: DescService[],
): (req: ServerReflectionRequest) => ServerReflectionResponse {
  const all = [...services, ServerReflection, ServerReflectionV1alpha];
  const files = closure(all.map((s) => s.file));
  const byName = new Map(files.map((f) => [`${f.name}.proto`, f]));
  const bySymbol = symbols(files);
  const messages = new Set(
    files.flatMap((f) => [...nestedMessages(f.messages)].map((m) => m.typeName)),
  );
  const encode = (f: DescFile) =>
    closure([f]).map((d) => toBinary(FileDescriptorProtoSchema, d.proto));

  return (req: ServerReflectionRequest): ServerReflectionResponse => {
    const base = { validHost: req.host, originalRequest: req };
    const r = req.messageRequest;
    const notFound = (what: string) =>
      create(ServerReflectionResponseSchema, {
        ...base,
        messageResponse: {
          case: "errorResponse",
          value: { errorCode: 5, errorMessage: `${what} not found` },
        },
      });
    const file = (f: DescFile | undefined, what: string) =>
      f
        ? create(ServerReflectionResponseSchema, {
          ...base,
          messageResponse: {
            case: "fileDescriptorResponse",
            value: { fileDescriptorProto: encode(f) },
          },
        })
        : notFound(what);
    switch (r.case) {
      case "listServices":
        return create(ServerReflectionResponseSchema, {
          ...base,
          messageResponse: {
            case: "listServicesResponse",
            value: { service: all.map((s) => ({ name: s.typeName })) },
          },
        });
      case "fileByFilename":
        return file(byName.get(r.value), `file ${r.value}`);
      case "fileContainingSymbol":
        return file(bySymbol.get(r.value), `symbol ${r.value}`);
      case "allExtensionNumbersOfType": {
        // Our protos declare no extensions: a known message has none (grpc-go answers so).
        const f = bySymbol.get(r.value);
        if (!f || !messages.has(r.value)) return notFound(`message type ${r.value}`);
        return create(ServerReflectionResponseSchema, {
          ...base,
          messageResponse: {
            case: "allExtensionNumbersResponse",
            value: { baseTypeName: r.value, extensionNumber: [] },
          },
        });
      }
      case "fileContainingExtension":
        return notFound(
          `extension ${r.value.extensionNumber} of ${r.value.containingType} (these protos declare none)`,
        );
      default:
        return create(ServerReflectionResponseSchema, {
          ...base,
          messageResponse: {
            case: "errorResponse",
            value: { errorCode: 12, errorMessage: `${r.case ?? "empty request"} is not supported` },
          },
        });
    }
  };
}

/** v1 handlers over `answer`. */
function v1Impl(
  answer: (req: ServerReflectionRequest) => ServerReflectionResponse,
): ServiceImpl<typeof ServerReflection> {
  return {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) yield answer(req);
    },
  };
}

/**
 * v1alpha handlers over the v1 `answer`: the two packages' messages have the same fields and
 * numbers, so each crosses over as its own bytes, and no reflection logic is written twice.
 */
function v1alphaImpl(
  answer: (req: ServerReflectionRequest) => ServerReflectionResponse,
): ServiceImpl<typeof ServerReflectionV1alpha> {
  return {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        const v1 = fromBinary(
          ServerReflectionRequestSchema,
          toBinary(ServerReflectionRequestV1alphaSchema, req),
        );
        yield fromBinary(
          ServerReflectionResponseV1alphaSchema,
          toBinary(ServerReflectionResponseSchema, answer(v1)),
        );
      }
    },
  };
}

/**
 * Register reflection v1 and v1alpha describing `services` on `r`, sharing one index: each lists
 * both, so they are only ever registered together (no lone one listing a service not served).
 *
 * @example
 * ```ts
 * registerReflection(r, [NodeService, InferenceService]);
 * ```
 */
export function registerReflection(r: ConnectRouter, services: DescService[]): ConnectRouter {
  const answer = answerer(services);
  return r.service(ServerReflection, v1Impl(answer))
    .service(ServerReflectionV1alpha, v1alphaImpl(answer));
}
