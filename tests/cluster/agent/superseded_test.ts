// An agent whose id a live member at another address took over while it was away stops (hunt
// 4, F4: it ran on as a zombie); one stray copy of its own earlier announcement does not.
import { watchSuperseded } from "../../../cluster/agent/superseded.ts";
import type { Member, MemberEvent } from "../../../cluster/gossip/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

function harness(confirmMs = 5000) {
  const listeners: ((e: MemberEvent) => void)[] = [];
  let t = 0;
  const told: string[] = [];
  const stop = watchSuperseded(
    { on: (_type, fn) => (listeners.push(fn), () => void listeners.splice(0)) },
    "b",
    (why) => void told.push(why),
    confirmMs,
    () => t,
  );
  const conflict = (id: string, addr: string, at: number) => {
    t = at;
    for (const fn of listeners) fn({ type: "conflict", member: { id, addr } as Member, at });
  };
  return { conflict, told, stop };
}

Deno.test("watchSuperseded: the same other holder heard again after the bound stops the agent, once", () => {
  const h = harness();
  h.conflict("b", "10.0.0.9:7946", 0);
  h.conflict("b", "10.0.0.9:7946", 4000);
  assertEquals(h.told, [], "within the bound: maybe a stray copy of an old announcement");
  h.conflict("b", "10.0.0.9:7946", 6000);
  assertEquals(h.told.length, 1);
  assert(h.told[0].includes("10.0.0.9:7946") && h.told[0].includes("--node-id"), h.told[0]);
  h.conflict("b", "10.0.0.9:7946", 20000);
  assertEquals(h.told.length, 1, "told once");
});

Deno.test("watchSuperseded: other members' conflicts, and one report alone, are not this agent's", () => {
  const h = harness();
  h.conflict("c", "10.0.0.9:7946", 0);
  h.conflict("c", "10.0.0.9:7946", 9000);
  h.conflict("b", "10.0.0.8:7946", 9000);
  assertEquals(h.told, []);
  h.stop();
  h.conflict("b", "10.0.0.8:7946", 20000);
  assertEquals(h.told, [], "stopped watching");
});
