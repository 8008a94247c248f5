/**
 * RPC plumbing of an agent: the one-port gRPC/gRPC-web/Connect listener (mutual TLS when
 * configured), client transports, and the mapping of internal errors to status codes.
 *
 * @example
 * ```ts
 * import { createRpcTransport, startRpcServer } from "./mod.ts";
 * const server = await startRpcServer({ port: 0, routes: (r) => r.service(NodeService, impl) });
 * const transport = await createRpcTransport(`127.0.0.1:${server.port}`);
 * ```
 *
 * @module
 */
export {
  checkBindAddress,
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_MAX_REQUEST_BYTES,
  DEFAULT_RPC_HOST,
  DEFAULT_RPC_PORT,
  isLoopback,
  LARGE_MESSAGE_METHODS,
  MAX_CONCURRENT_STREAMS,
  type RpcServer,
  RpcServerError,
  type RpcServerOptions,
  startRpcServer,
} from "./server.ts";
export {
  createRpcTransport,
  EndpointError,
  endpointUrl,
  identityCheck,
  type RpcProtocol,
  type RpcTransport,
  type RpcTransportOptions,
} from "./transport.ts";
export {
  answeredByAgent,
  boundMessage,
  errorInterceptor,
  explainRpcError,
  MAX_MESSAGE_BYTES,
  type RpcCodeName,
  RpcFailure,
  toConnectError,
} from "./errors.ts";
export {
  EnvelopeReader,
  grpcEnvelope,
  MAX_QUEUED_BYTES,
  MAX_QUEUED_MESSAGES,
  MessageQueue,
} from "./grpc_envelope.ts";
export {
  type BidiCall,
  type BidiImpl,
  type BidiMethod,
  GRPC_CONTENT_TYPE,
  isPlainGrpc,
  openBidi,
  RAW_SERVER_STREAMS,
  type RawServerStream,
  serveBidi,
  serveServerStream,
  STREAM_WRITE_TIMEOUT_MS,
  writeAndWait,
} from "./grpc_stream.ts";
export {
  closeQuietly,
  connectTcpPlane,
  type Envelope,
  FrameReader,
  isBrokenConnection,
  isPlaneBusy,
  isPlaneUnavailable,
  lingerClose,
  parseTrailer,
  PLANE_BUSY,
  type PlaneProtocol,
  planeUnavailable,
  probeTcpPlane,
  readExact,
  readInto,
  startTcpPlane,
  type TcpPlane,
  type TcpPlaneOptions,
  TRAILER_FLAG,
  trailerEnvelope,
  WRITE_TIMEOUT_MS,
  writeAll,
} from "./tcp_plane.ts";
export { openTcpBidi, serveTcpBidi } from "./tcp_bidi.ts";
