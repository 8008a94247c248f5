/** The gRPC health service (cluster/rpc/health.ts). */
import { grpcHealthService, HealthStatus } from "../../../cluster/rpc/health.ts";
import { assert, assertEquals } from "../../support/assert.ts";

Deno.test("health Watch: one abort listener at a time, however long it watches; it ends on abort", async () => {
  // A listener was added at every look (every second) and never removed.
  let status = HealthStatus.SERVING;
  const svc = grpcHealthService(() => status, 5);
  const ctl = new AbortController();
  let listeners = 0, most = 0;
  const signal = {
    get aborted() {
      return ctl.signal.aborted;
    },
    addEventListener(type: string, fn: () => void, opts?: AddEventListenerOptions) {
      listeners++;
      most = Math.max(most, listeners);
      ctl.signal.addEventListener(type, fn, opts);
    },
    removeEventListener(type: string, fn: () => void) {
      listeners--;
      ctl.signal.removeEventListener(type, fn);
    },
  };
  const seen: HealthStatus[] = [];
  const watch = (async () => {
    // deno-lint-ignore no-explicit-any
    for await (const r of (svc.watch as any)({ service: "" }, { signal })) seen.push(r.status);
  })();
  await new Promise((r) => setTimeout(r, 100));
  status = HealthStatus.NOT_SERVING;
  await new Promise((r) => setTimeout(r, 100));
  ctl.abort();
  await watch;
  assertEquals(seen, [HealthStatus.SERVING, HealthStatus.NOT_SERVING]);
  assertEquals(most, 1, "more than one abort listener at a time");
  assert(listeners <= 1, `${listeners} listeners left`);
});
