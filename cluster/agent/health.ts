/**
 * Health and readiness: what /health on the metrics port, GET /health on the HTTP API, and
 * grpc.health.v1 answer. Ready means every layer is loaded somewhere, not just planned.
 *
 * @module
 */
import { grpcHealthService, HealthStatus } from "../rpc/health.ts";
import { InferenceService } from "../../proto/mod.ts";
import type { AgentState } from "./state.ts";
import type { PlacementLoop } from "./placement_loop.ts";

/** Whether requests can be served now, and why not. */
export function readiness(
  s: AgentState,
  loop: PlacementLoop,
): { serving: boolean; detail?: string } {
  if (s.stopped) return { serving: false, detail: "agent is stopping" };
  if (s.idConflict !== undefined) return { serving: false, detail: s.idConflict };
  // A draining agent refuses new requests (503) while it finishes its own: a readiness probe
  // must say so, or a load balancer keeps sending it requests that are refused.
  if (s.draining) {
    return { serving: false, detail: "agent is shutting down (finishing its requests)" };
  }
  if (s.model && !loop.plan) {
    // The planner's reason (a failed stage, too little memory) where it has one.
    const detail = loop.error
      ? `no placement: ${loop.error}`
      : "no placement yet (waiting for enough agents)";
    return { serving: false, detail };
  }
  // Planned is not enough: until every layer is loaded somewhere, requests would only wait.
  const missing = loop.missingLayers();
  if (missing) return { serving: false, detail: `loading: ${missing}` };
  return { serving: true };
}

/** GET /health on the HTTP port: serving state, generation slots, queue and KV cache slots. */
export function apiHealth(s: AgentState, loop: PlacementLoop): Record<string, unknown> {
  const a = s.admission.stats;
  const used = s.stage?.openSessions ?? 0;
  const missing = loop.plan ? loop.missingLayers() : null;
  return {
    status: s.stopped
      ? "stopping"
      : s.draining
      ? "draining"
      : s.idConflict !== undefined
      ? "node_id_conflict"
      : !s.model
      ? "no_model"
      : loop.error
      ? "no_placement"
      : !loop.plan
      ? "starting"
      : missing
      ? "loading"
      : "ok",
    detail: s.idConflict ?? (loop.error ? `no placement: ${loop.error}` : missing ?? undefined),
    node: s.nodeId,
    model: s.model ? s.model.id.name : null,
    requests: {
      active: a.active,
      queued: a.queued,
      max_active: a.maxActive,
      max_queued: a.maxQueued,
    },
    kv_cache: s.stage
      ? { used, free: Math.max(0, s.config.maxSessions - used), total: s.config.maxSessions }
      : null,
    placement: loop.plan?.stages.map((st) => ({ node: st.nodeId, from: st.from, to: st.to })) ??
      null,
  };
}

/**
 * Standard gRPC health: "" is the agent (serving while it runs), InferenceService is ready when
 * every layer is loaded somewhere; the `services` named answer whenever the agent runs.
 */
export function grpcHealth(s: AgentState, loop: PlacementLoop, services: readonly string[]) {
  return grpcHealthService((service) => {
    if (service === InferenceService.typeName) {
      return readiness(s, loop).serving ? HealthStatus.SERVING : HealthStatus.NOT_SERVING;
    }
    if (service === "" || services.includes(service)) {
      return s.stopped || s.draining ? HealthStatus.NOT_SERVING : HealthStatus.SERVING;
    }
    return undefined;
  });
}
