/**
 * The inference pipeline: stages that run layer ranges for many sessions, and the head that
 * drives a chain of them and recovers when one dies.
 * @module
 */
export {
  type ChainProvider,
  Head,
  type HeadOptions,
  type HeadRequest,
  type HeadResult,
  isTransportFailure,
  NoPlacementError,
  type SessionLink,
  type StageLink,
  StageLinkError,
} from "./head.ts";
export { LocalStageLink } from "./local_link.ts";
export {
  type SampledToken,
  type StageFrame,
  StageHost,
  type StageHostOptions,
  type StageResult,
  StageSessionError,
  type TailSampling,
} from "./stage_host.ts";
export { type ForwardContext, forwardHandler } from "./forward_service.ts";
export { RemoteStageLink, type RemoteStageOptions } from "./remote_link.ts";
export {
  decodeValues,
  encodeTensor,
  encodeValues,
  samplingFromWire,
  samplingToWire,
  WireFormatError,
} from "./wire.ts";
export { GossipChainProvider, type StageCandidate, stageKey, tileChain } from "./gossip_chain.ts";
