/**
 * The stage room's load outcomes without a process: a load that a newer plan cancelled is
 * superseded (info, the agent stays in the plan); a load that fails on its own leaves the plan.
 */
import { StageRoom } from "../../../cluster/agent/stage.ts";
import type { AgentState } from "../../../cluster/agent/state.ts";
import type { Observer } from "../../../cluster/agent/observe.ts";
import type { AgentMetrics } from "../../../cluster/telemetry/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

/** A room whose fetch (transfer.ensure) runs `fetch`, and what it logged. */
function room(fetch: (r: StageRoom) => Promise<void>) {
  const logs: { level: string; msg: string }[] = [];
  const published: string[] = [];
  const s = {
    nodeId: "a",
    stopped: false,
    draining: false,
    drained: false,
    model: { id: { toString: () => "m@1" } },
    config: { batchSize: 8 },
    gossip: { localNode: { meta: undefined }, updateMetadata: () => {} },
    log: (level: string, msg: string) => logs.push({ level, msg }),
    transfer: { ensure: () => fetch(r) },
  } as unknown as AgentState;
  const observe = { publishSelf: (m: string) => published.push(m) } as unknown as Observer;
  const r = new StageRoom(s, observe, {} as AgentMetrics, () => {});
  /** Every load queued so far, done. */
  const settled = async () => {
    for (let p = r.loading; p; p = p === r.loading ? undefined : r.loading) await p;
  };
  return { r, s, logs, published, settled };
}

Deno.test("a stage load cancelled by a newer plan is superseded (info), not a failure that leaves the plan", async () => {
  // Before: "stage load failed: the transfer was cancelled" at error level, for a deploy that
  // replaced one still fetching (found by an independent tester).
  const { r, s, logs, settled } = room((r) => {
    r.want(undefined); // the newer plan: no layers here
    return Promise.reject(new Error("the transfer was cancelled"));
  });
  r.want({ from: 0, to: 2 });
  await settled();
  assertEquals(logs.filter((l) => l.level === "error"), []);
  assert(logs.some((l) => l.msg === "stage load superseded" && l.level === "info"), `${logs}`);
  assertEquals(s.drained, false);
});

Deno.test("a stage load that fails on its own is logged as failed and leaves the plan", async () => {
  const { r, s, logs, published, settled } = room(() => Promise.reject(new Error("disk gone")));
  r.want({ from: 0, to: 2 });
  await settled();
  assert(logs.some((l) => l.msg === "stage load failed" && l.level === "error"), `${logs}`);
  assertEquals(s.drained, true);
  assert(published.some((m) => m.includes("disk gone")), `${published}`);
});
