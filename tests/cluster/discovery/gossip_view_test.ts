/**
 * The gossip-backed membership view keeps listing members that died or left after gossip has
 * reaped them (its gossipToTheDeadTime), for the view's own retention, with when they died.
 */
import { NodeState } from "../../../proto/mod.ts";
import { GossipMembershipView } from "../../../cluster/discovery/gossip_view.ts";
import { emptyMetadata, localConfig, Memberlist, SimNetwork } from "../../../cluster/gossip/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

Deno.test("gossip view: a dead member stays listed (with when it died) for the retention, after gossip reaps it", async () => {
  const net = new SimNetwork({ seed: 3 });
  const members = ["a", "b", "c", "d"].map((id) =>
    Memberlist.create(localConfig({ nodeId: id, rng: net.rng }), net.createTransport())
  );
  for (const m of members.slice(1)) await net.settle(m.join([members[0].transport.addr]));
  await net.runUntil(() => members.every((m) => m.numMembers() === 4), 30_000, 50);
  const view = new GossipMembershipView(members[0], {
    clusterName: "test",
    departedRetentionMs: 120_000,
    now: () => net.now(),
  });
  const state = (id: string) => view.members().find((n) => n.id === id)?.state;
  net.crash(members[2].transport.addr);
  await net.settle(members[3].leave(2000));
  await members[3].shutdown();
  await net.runUntil(() => members[0].member("c")?.status === "dead", 30_000, 50);
  const diedAt = net.now();
  // Past gossip's own memory (gossipToTheDeadTime: 10 s with the local preset) and reaped.
  await net.run(60_000);
  assertEquals(members[0].member("c"), undefined, "gossip has reaped c");
  assertEquals(members[0].member("d"), undefined, "gossip has reaped d");
  // Before: both had vanished from every view by now.
  assertEquals(state("c"), NodeState.DEAD);
  assertEquals(state("d"), NodeState.LEFT);
  const c = view.members().find((n) => n.id === "c")!;
  const at = Number(c.stateChangedUnixMs);
  assertEquals(at >= diedAt - 5_000 && at <= diedAt, true, `died at ${at}, seen dead at ${diedAt}`);
  assertEquals(view.members().map((n) => n.id).sort(), ["a", "b", "c", "d"]);
  // After the retention they go.
  await net.run(70_000);
  assertEquals(state("c"), undefined);
  assertEquals(view.members().map((n) => n.id).sort(), ["a", "b"]);
  for (const m of members) await m.shutdown();
});

Deno.test("gossip view: a member that died and came back is listed once, as alive", async () => {
  const net = new SimNetwork({ seed: 4 });
  const mk = (id: string) =>
    Memberlist.create(localConfig({ nodeId: id, rng: net.rng }), net.createTransport());
  const a = mk("a"), b = mk("b");
  await net.settle(b.join([a.transport.addr]));
  await net.runUntil(() => a.numMembers() === 2, 30_000, 50);
  const view = new GossipMembershipView(a, { clusterName: "t", now: () => net.now() });
  net.crash(b.transport.addr);
  await net.runUntil(() => a.member("b")?.status === "dead", 30_000, 50);
  await net.run(30_000);
  assertEquals(view.members().filter((n) => n.id === "b").map((n) => n.state), [NodeState.DEAD]);
  const b2 = mk("b");
  await net.settle(b2.join([a.transport.addr]));
  await net.runUntil(() => a.member("b")?.status === "alive", 30_000, 50);
  assertEquals(view.members().filter((n) => n.id === "b").map((n) => n.state), [NodeState.ALIVE]);
  for (const m of [a, b2]) await m.shutdown();
});

Deno.test("gossip view: the answering agent's own available memory and load are measured, not 0", async () => {
  // Before: gossip carries neither, and `nodes list --json` said 0 bytes available for every
  // node, the one answering included (found by an independent tester).
  const net = new SimNetwork({ seed: 5 });
  const members = ["a", "b"].map((id) =>
    Memberlist.create(
      localConfig({ nodeId: id, rng: net.rng, metadata: emptyMetadata(id) }),
      net.createTransport(),
    )
  );
  await net.settle(members[1].join([members[0].transport.addr]));
  await net.runUntil(() => members.every((m) => m.numMembers() === 2), 30_000, 50);
  const view = new GossipMembershipView(members[0], { clusterName: "test", now: () => net.now() });
  const a = view.members().find((n) => n.id === "a")!;
  assert(a.resources!.memoryAvailableBytes > 0n, `${a.resources!.memoryAvailableBytes}`);
  assertEquals(view.local().resources!.memoryAvailableBytes > 0n, true);
  assertEquals(view.members().find((n) => n.id === "b")!.resources!.memoryAvailableBytes, 0n);
  for (const m of members) await m.shutdown();
});
