/**
 * The standard gRPC health service (grpc.health.v1.Health) on the agent's RPC port, so
 * grpc-health-probe, `grpcurl … grpc.health.v1.Health/Check` and Kubernetes `grpc:` probes work
 * without our protos.
 *
 * @module
 */
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { GrpcHealth as Health, GrpcHealthStatus as Status } from "../../proto/mod.ts";

export { Health, Status as HealthStatus };

/** How often Watch re-checks the status (it sends only changes). */
const WATCH_INTERVAL_MS = 1000;

/**
 * Health handlers over `status(service)`: SERVING / NOT_SERVING for a service this agent knows,
 * undefined for one it does not ("" is the agent as a whole).
 *
 * @example
 * ```ts
 * r.service(Health, grpcHealthService((s) => s === "" ? HealthStatus.SERVING : undefined));
 * ```
 */
export function grpcHealthService(
  status: (service: string) => Status | undefined,
  /** Time between Watch's looks at the status (tests shorten it). */
  intervalMs = WATCH_INTERVAL_MS,
): ServiceImpl<typeof Health> {
  return {
    check(req) {
      const s = status(req.service);
      if (s === undefined) {
        throw new ConnectError(`no service "${req.service}" on this agent`, Code.NotFound);
      }
      return { status: s };
    },
    async *watch(req, ctx) {
      let last: Status | undefined;
      while (!ctx.signal.aborted) {
        const s = status(req.service) ?? Status.SERVICE_UNKNOWN;
        if (s !== last) yield { status: s };
        last = s;
        // One abort listener per wait, removed when the wait ends (one was added every second
        // and never removed: 86 400 a day per open Watch).
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(t);
            ctx.signal.removeEventListener("abort", done);
            resolve();
          };
          const t = setTimeout(done, intervalMs);
          ctx.signal.addEventListener("abort", done, { once: true });
        });
      }
    },
  };
}
