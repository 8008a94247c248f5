/**
 * Discovery over RPC: the DiscoveryService and NodeService handlers, the membership view they
 * answer from (the agent adapts the gossip memberlist to it), and measured machine resources.
 *
 * @example
 * ```ts
 * import { discoveryService, measureResources, MetricsSampler, nodeService, StaticMembership }
 *   from "./mod.ts";
 * const view = new StaticMembership({ local: { id: "a", addresses: ["127.0.0.1"], rpcPort: 7950 } });
 * const sampler = new MetricsSampler("a");
 * const routes = (r) => {
 *   r.service(DiscoveryService, discoveryService(view));
 *   r.service(NodeService, nodeService({ view, resources: () => measureResources(), metrics: () => sampler.sample() }));
 * };
 * ```
 *
 * @module
 */
export {
  type MembershipView,
  nodeInfo,
  type NodeInfoInit,
  type RegisterResult,
  StaticMembership,
  type StaticMembershipOptions,
} from "./membership.ts";
export {
  cpuCores,
  measureResources,
  MetricsSampler,
  type ResourceOptions,
  type WorkCounters,
} from "./resources.ts";
export {
  clusterMetrics,
  type DiscoveryOptions,
  discoveryService,
  nodeService,
  type NodeServiceDeps,
  type Readiness,
  type RequestTotals,
  STREAM_INTERVAL,
  validateRegistration,
} from "./services.ts";
