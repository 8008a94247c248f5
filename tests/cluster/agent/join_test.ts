/**
 * Joining in the background: an id still held by a member's previous life is retried; while it
 * is refused the agent stands aside (s.idConflict), and it gives up after the patience.
 */
import { duplicateIdPatience, joinInBackground } from "../../../cluster/agent/lifecycle.ts";
import type { AgentState } from "../../../cluster/agent/state.ts";
import { lanConfig, localConfig, wanConfig } from "../../../cluster/gossip/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

/** A fake agent whose first `refusals` joins are refused for a duplicate id. */
function fakeAgent(refusals: number) {
  let calls = 0;
  const logs: string[] = [];
  const s = {
    stopped: false,
    nodeId: "n4",
    config: { seeds: ["10.0.0.1:7946"] },
    log: (level: string, msg: string) => logs.push(`${level} ${msg}`),
    gossip: {
      transport: { addr: "10.0.0.2:7946" },
      numMembers: () => 3,
      join: () => {
        calls++;
        if (calls <= refusals) {
          // A restarted pod's node id, its old self not yet declared dead.
          const e = new Error(`node id "n4" is already used by a live member at 10.0.0.5:7946`);
          e.name = "DuplicateNodeIdError";
          return Promise.reject(e);
        }
        return Promise.resolve(1);
      },
    },
  } as unknown as AgentState;
  return { s, logs, calls: () => calls };
}

async function until(what: string, ok: () => boolean, ms = 5000) {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("a join refused for a duplicate id is retried, standing aside meanwhile, then joins", async () => {
  const { s, logs, calls } = fakeAgent(2);
  const conflicts: (string | undefined)[] = [];
  let gaveUp: string | undefined;
  joinInBackground(s, {
    duplicateRetryMs: 20,
    duplicatePatienceMs: 5000,
    onConflict: () => conflicts.push(s.idConflict),
    onGiveUp: (m) => gaveUp = m,
  });
  await until("the third attempt", () => calls() === 3 && s.idConflict === undefined);
  // Before, the first refusal was logged and the agent stayed outside the cluster for good.
  assertEquals(logs.filter((l) => l.startsWith("error")).length, 2);
  // Refused: the agent stood aside, with a message naming the holder; told once, not per retry.
  assertEquals(conflicts.length, 2);
  assert(conflicts[0]!.includes("already used by a live member at 10.0.0.5:7946"), conflicts[0]);
  assert(conflicts[0]!.includes("hosts no layers and serves no requests"), conflicts[0]);
  assertEquals(conflicts[1], undefined, "joined: the id is ours, the agent takes its place");
  assertEquals(gaveUp, undefined);
});

Deno.test("an id that stays another live member's is given up on after the patience, with a clear message", async () => {
  const { s, calls } = fakeAgent(Infinity);
  let gaveUp: string | undefined;
  const t0 = Date.now();
  joinInBackground(s, {
    duplicateRetryMs: 20,
    duplicatePatienceMs: 200,
    onGiveUp: (m) => gaveUp = m,
  });
  await until("giving up", () => gaveUp !== undefined);
  // Before: retried every 5 s for ever while the agent served as the id's holder.
  assert(Date.now() - t0 >= 200, `gave up after ${Date.now() - t0} ms`);
  assert(gaveUp!.startsWith('giving up: node id "n4" is still used by a live member'), gaveUp);
  assert(gaveUp!.includes("10.0.0.5:7946"), gaveUp);
  assert(s.idConflict !== undefined, "still standing aside");
  const n = calls();
  await new Promise((r) => setTimeout(r, 100));
  assertEquals(calls(), n, "no retries after giving up");
});

Deno.test("the patience covers a restarted member's old self being found dead (29 s local, 50 s lan, ~8 min wan)", () => {
  const p = (cfg: typeof localConfig) =>
    Math.round(duplicateIdPatience(cfg({ nodeId: "x" })) / 1000);
  assertEquals(p(localConfig), 29);
  assertEquals(p(lanConfig), 50);
  assertEquals(p(wanConfig), 469);
});
