/**
 * gRPC server reflection (grpc.reflection.v1.ServerReflection) on the agent's RPC port: lists
 * the services and sends their file descriptors, so `grpcurl host:7950 list` and
 * `grpcurl … describe` work without our .proto files.
 *
 * @module
 */
import {
  create,
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

/** Fully-qualified symbol → the file that defines it (messages, enums, services, methods). */
function symbols(files: DescFile[]): Map<string, DescFile> {
  const out = new Map<string, DescFile>();
  const message = (f: DescFile, m: DescMessage) => {
    out.set(m.typeName, f);
    m.nestedMessages.forEach((n) => message(f, n));
    m.nestedEnums.forEach((e) => out.set(e.typeName, f));
  };
  for (const f of files) {
    f.messages.forEach((m) => message(f, m));
    f.enums.forEach((e) => out.set(e.typeName, f));
    for (const s of f.services) {
      out.set(s.typeName, f);
      for (const m of s.methods) out.set(`${s.typeName}.${m.name}`, f);
    }
  }
  return out;
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
      default:
        // Extensions: our protos declare none.
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
