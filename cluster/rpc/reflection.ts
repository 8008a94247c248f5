/**
 * gRPC server reflection (grpc.reflection.v1.ServerReflection) on the agent's RPC port: lists
 * the services and sends their file descriptors, so `grpcurl host:7950 list` and
 * `grpcurl … describe` work without our .proto files.
 *
 * @module
 */
import {
  create,
  type DescEnum,
  type DescFile,
  type DescMessage,
  type DescService,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  ServerReflection,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "../../proto/mod.ts";

export { ServerReflection };

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
 * Reflection handlers describing `services` (and ServerReflection itself).
 *
 * @example
 * ```ts
 * r.service(ServerReflection, reflectionService([NodeService, InferenceService]));
 * ```
 */
export function reflectionService(
  services: DescService[],
): ServiceImpl<typeof ServerReflection> {
  const all = [...services, ServerReflection];
  const files = closure(all.map((s) => s.file));
  const byName = new Map(files.map((f) => [`${f.name}.proto`, f]));
  const bySymbol = symbols(files);
  const messages = new Set(
    files.flatMap((f) => [...nestedMessages(f.messages)].map((m) => m.typeName)),
  );
  const encode = (f: DescFile) =>
    closure([f]).map((d) => toBinary(FileDescriptorProtoSchema, d.proto));

  const answer = (req: ServerReflectionRequest): ServerReflectionResponse => {
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
  return {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) yield answer(req);
    },
  };
}
