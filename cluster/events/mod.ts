/**
 * Cluster events: what the agent publishes (membership changes from gossip, placement changes,
 * stages loaded, request phases and progress, recoveries) and ClusterService, through which
 * llmctl and the TUI watch (`StreamUpdates`) and steer (`ExecuteCommand`) the cluster.
 *
 * @example
 * ```ts
 * import { clusterService, EventHub } from "./mod.ts";
 * const hub = new EventHub();
 * router.service(ClusterService, clusterService({ hub, localId, snapshot, commands }));
 * hub.publish({ case: "placement", value: placementEvent });
 * ```
 *
 * @module
 */
export {
  type ClusterEvent,
  type DeliveredEvent,
  EventHub,
  type EventHubOptions,
  kindOf,
  type StampedEvent,
  Subscription,
} from "./hub.ts";
export {
  type ClusterCommands,
  clusterService,
  type ClusterServiceOptions,
  type CommandResult,
  snapshotEvents,
} from "./service.ts";
export { isLogLevel, LeveledLog, LOG_LEVELS, type LogLevel, type LogSink } from "./log_level.ts";
export { RequestTracker } from "./requests.ts";
export { MembershipTracker } from "./membership.ts";
export {
  type PeerHandle,
  type PeerMetricsOptions,
  PeerMetricsRelay,
  type PeerMetricsRelayOptions,
  PeerMetricsWatcher,
} from "./peer_metrics.ts";
