/**
 * Layer placement: which node runs which contiguous range of a model's layers.
 *
 * @example
 * ```ts
 * import { planPlacement } from "./mod.ts";
 * const plan = planPlacement(footprint, [{ id: "a", memoryBudget: 2e9, speed: 1 }]);
 * ```
 * @module
 */
export { footprintFromIndex, type TensorIndex } from "./footprint.ts";
export {
  modelBytes,
  type ModelFootprint,
  type Placement,
  PlacementError,
  type PlacementNode,
  planEpoch,
  planPlacement,
  type StageAssignment,
  stageBytes,
  stageWeightBytes,
  stageWorkBytes,
} from "./plan.ts";
export {
  agreedReplicaCount,
  parseReplicaCount,
  planReplicas,
  type ReplicaCount,
  replicaCountFromWire,
  replicaCountToWire,
  replicaEpoch,
  type ReplicaNode,
  type ReplicaPlan,
} from "./replicas.ts";
