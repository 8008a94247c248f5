/**
 * The inference pipeline: stages that run layer ranges for many sessions and forward to the
 * next stage, the head that opens a chain of them and recovers when one dies, and the local
 * Engine: a head over a chain of one in-process stage (the same generation path).
 * @module
 */
export {
  type ChainHop,
  type ChainProvider,
  headSessionId,
  type ReplyStream,
  requestOfSession,
  type SessionLink,
  type SessionOpen,
  type StageLink,
} from "./links.ts";
export {
  guard,
  isTransportFailure,
  localExhaustion,
  LocalExhaustionError,
  NoPlacementError,
  ReplyStreamError,
  StageBusyError,
  stageKey,
  StageLinkError,
  StaleEpochError,
} from "./stage_errors.ts";
export { Head, type HeadOptions, type HeadRequest, type HeadResult } from "./head.ts";
export { type LocalLinkOptions, LocalStageLink } from "./local_link.ts";
export {
  type ChainStageContext,
  type LinkFactory,
  openChainSession,
  PREFILL_CHUNK_ROWS,
} from "./chain_session.ts";
export { Engine, type EngineOptions, type GenerateOptions, type GenerateResult } from "./engine.ts";
export { StageHost, type StageHostOptions } from "./stage_host.ts";
export {
  type SampledToken,
  type StageFrame,
  type StageResult,
  StageSessionError,
  type TailSampling,
} from "./stage_frame.ts";
export {
  FORWARD_METHOD,
  FORWARD_PREAMBLE,
  type ForwardContext,
  forwardHandler,
  forwardProtocol,
} from "./forward_service.ts";
export { RemoteStageLink, type RemoteStageOptions } from "./remote_link.ts";
export {
  openReplyStream,
  REPLIES_PREAMBLE,
  repliesProtocol,
  type ReplySink,
  ReplySinks,
} from "./replies.ts";
export {
  decodeValues,
  encodeTensor,
  encodeValues,
  openFromWire,
  openToWire,
  samplingFromWire,
  samplingToWire,
  WireFormatError,
} from "./wire.ts";
export {
  type ChainGap,
  chooseReplica,
  describeGap,
  GossipChainProvider,
  preferPrefix,
  ReplicaLedger,
  type ReplicaRoute,
  replicaRoutes,
  type StageCandidate,
  type StageLoadView,
  tileChain,
} from "./gossip_chain.ts";
export { PREFIX_ROUTES_MAX, type PrefixHint, PrefixRoutes } from "./prefix_routes.ts";
