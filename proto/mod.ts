/**
 * The wire types of distributed-llm, generated from proto/distributed_llm/v1/*.proto (see
 * proto/generate.ts). Import messages, enums and service descriptors from here, never from
 * proto/gen/ directly, and never hand-write a wire type.
 *
 * @example
 * ```ts
 * import { create } from "@bufbuild/protobuf";
 * import { NodeInfoSchema, NodeState } from "./mod.ts";
 * const node = create(NodeInfoSchema, { id: "a", state: NodeState.ALIVE, rpcPort: 7950 });
 * ```
 *
 * @module
 */
export * from "./gen/distributed_llm/v1/types_pb.ts";
export * from "./gen/distributed_llm/v1/discovery_pb.ts";
export * from "./gen/distributed_llm/v1/node_pb.ts";
export * from "./gen/distributed_llm/v1/inference_pb.ts";
export * from "./gen/distributed_llm/v1/cluster_pb.ts";
export * from "./gen/distributed_llm/v1/transfer_pb.ts";
// The standard gRPC health protocol; renamed, as its message names clash with NodeService's.
export {
  Health as GrpcHealth,
  type HealthCheckResponse as GrpcHealthCheckResponse,
  HealthCheckResponse_ServingStatus as GrpcHealthStatus,
} from "./gen/grpc/health/v1/health_pb.ts";
// The standard gRPC server reflection protocol (what grpcurl asks when given no .proto files).
export {
  ServerReflection,
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "./gen/grpc/reflection/v1/reflection_pb.ts";
// Its older v1alpha twin (same messages, another package) for clients that speak only that.
export {
  ServerReflection as ServerReflectionV1alpha,
  type ServerReflectionRequest as ServerReflectionRequestV1alpha,
  ServerReflectionRequestSchema as ServerReflectionRequestV1alphaSchema,
  type ServerReflectionResponse as ServerReflectionResponseV1alpha,
  ServerReflectionResponseSchema as ServerReflectionResponseV1alphaSchema,
} from "./gen/grpc/reflection/v1alpha/reflection_pb.ts";
