// An agent whose id a live member at another address took over while it was away stops (hunt
// 4, F4: it ran on as a zombie); one stray copy of its own earlier announcement does not.
import { watchSuperseded } from "../../../cluster/agent/superseded.ts";
import type { Member, MemberEvent } from "../../../cluster/gossip/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

/** `holders`: the addresses where a process answers a ping for our id. */
function harness(confirmMs = 5000, holders = new Set(["10.0.0.9:7946", "10.0.0.8:7946"])) {
  const listeners: ((e: MemberEvent) => void)[] = [];
  let t = 0;
  const told: string[] = [];
  const asked: string[] = [];
  const stop = watchSuperseded(
    {
      on: (_type, fn) => (listeners.push(fn), () => void listeners.splice(0)),
      answersAsUs: (addr) => (asked.push(addr), Promise.resolve(holders.has(addr))),
    },
    "b",
    (why) => void told.push(why),
    confirmMs,
    () => t,
  );
  const conflict = async (id: string, addr: string, at: number) => {
    t = at;
    for (const fn of listeners) fn({ type: "conflict", member: { id, addr } as Member, at });
    await new Promise((r) => setTimeout(r, 0)); // the question's answer
  };
  return { conflict, told, stop, asked };
}

Deno.test("watchSuperseded: the same other holder heard again after the bound stops the agent, once", async () => {
  const h = harness();
  await h.conflict("b", "10.0.0.9:7946", 0);
  await h.conflict("b", "10.0.0.9:7946", 4000);
  assertEquals(h.told, [], "within the bound: maybe a stray copy of an old announcement");
  await h.conflict("b", "10.0.0.9:7946", 6000);
  assertEquals(h.told.length, 1);
  assert(h.told[0].includes("10.0.0.9:7946") && h.told[0].includes("--node-id"), h.told[0]);
  await h.conflict("b", "10.0.0.9:7946", 20000);
  assertEquals(h.told.length, 1, "told once");
});

Deno.test("watchSuperseded: other members' conflicts, and one report alone, are not this agent's", async () => {
  const h = harness();
  await h.conflict("c", "10.0.0.9:7946", 0);
  await h.conflict("c", "10.0.0.9:7946", 9000);
  await h.conflict("b", "10.0.0.8:7946", 9000);
  assertEquals(h.told, []);
  h.stop();
  await h.conflict("b", "10.0.0.8:7946", 20000);
  assertEquals(h.told, [], "stopped watching");
});

Deno.test("watchSuperseded: a replayed or forged claim (nobody there answers as us) never stops the agent", async () => {
  // One replayed sealed alive of this agent's earlier life, at its old address, made it exit.
  const h = harness(5000, new Set());
  await h.conflict("b", "127.0.0.1:53100", 0);
  await h.conflict("b", "127.0.0.1:53100", 6000);
  assertEquals(h.asked, ["127.0.0.1:53100"], "the claimed holder was asked");
  assertEquals(h.told, []);
  // Asked again only after another bound, not at every copy of the claim.
  await h.conflict("b", "127.0.0.1:53100", 7000);
  assertEquals(h.asked.length, 1);
  await h.conflict("b", "127.0.0.1:53100", 12000);
  assertEquals([h.asked.length, h.told.length], [2, 0]);
});
