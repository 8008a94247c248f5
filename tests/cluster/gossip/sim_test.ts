// The protocol on the deterministic simulated network: convergence, failure detection within
// the LAN preset's bound, no false deaths under loss, partitions, leave, metadata, duplicate ids.
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";
import {
  DuplicateNodeIdError,
  emptyMetadata,
  encode,
  lanConfig,
  Memberlist,
  SimNetwork,
} from "../../../cluster/gossip/mod.ts";
import { formCluster, packet, percentile, simConfig } from "./helpers.ts";

/** Crash one member; return ms until every other member has it dead (null if not in maxMs). */
async function detect(net: SimNetwork, members: Memberlist[], victim: number, maxMs = 30_000) {
  const id = members[victim].localNode.id;
  net.crash(members[victim].transport.addr);
  const others = members.filter((_, i) => i !== victim);
  return await net.runUntil(() => others.every((m) => m.member(id)?.status === "dead"), maxMs, 10);
}

Deno.test("sim: 100 members joining one seed converge", async () => {
  const { net, members } = await formCluster(100, { seed: 11 });
  assert(net.now() < 10_000, `took ${net.now()} ms of simulated time`);
  for (const m of members) assertEquals(m.numMembers(), 100);
});

Deno.test("sim: a killed member is dead to all 99 others within 6 s, p99 over 20 trials (LAN preset)", async () => {
  const times: number[] = [];
  for (let trial = 0; trial < 20; trial++) {
    const { net, members } = await formCluster(100, { seed: 1000 + trial });
    await net.run(2000 + trial * 37); // settle; vary the phase of the probe loops
    const t = await detect(net, members, 1 + ((trial * 37) % 99));
    assert(t !== null, `trial ${trial}: not everyone declared the victim dead within 30 s`);
    times.push(t);
  }
  const p50 = percentile(times, 50), p99 = percentile(times, 99);
  console.log(
    JSON.stringify({ detection_ms: { p50, p99, max: Math.max(...times), trials: times.length } }),
  );
  assert(p99 <= 6000, `p99 detection ${p99} ms exceeds 6 s: ${times.join(", ")}`);
});

Deno.test("sim: 10% packet loss for 3 simulated minutes, 100 members: no false deaths", async () => {
  const { net, members } = await formCluster(100, { seed: 21 });
  let deaths = 0, suspicions = 0;
  for (const m of members) {
    m.on("dead", () => deaths++);
    m.on("suspect", () => suspicions++);
  }
  net.setDefaultLink({ loss: 0.1 });
  await net.run(180_000);
  console.log(JSON.stringify({ loss: 0.1, simulated_s: 180, suspicions, false_deaths: deaths }));
  assertEquals(deaths, 0);
  for (const m of members) assertEquals(m.numMembers(), 100);
});

Deno.test("sim: 20% loss and 50±20 ms delay (the netns profile), 5 members, 2 minutes: no false deaths", async () => {
  const { net, members } = await formCluster(5, { seed: 5, link: { latencyMs: 50, jitterMs: 20 } });
  let deaths = 0;
  for (const m of members) m.on("dead", () => deaths++);
  net.setDefaultLink({ loss: 0.2 });
  await net.run(120_000);
  assertEquals(deaths, 0);
});

Deno.test("sim: partition 2|3 → each side declares the other dead; heal → whole again", async () => {
  const { net, members } = await formCluster(5, { seed: 8 });
  const a = members.slice(0, 2), b = members.slice(2);
  net.partition(a.map((m) => m.transport.addr), b.map((m) => m.transport.addr));
  const split = await net.runUntil(
    () => a.every((m) => m.numMembers() === 2) && b.every((m) => m.numMembers() === 3),
    30_000,
    50,
  );
  assert(split !== null, "both sides should notice the partition");
  await net.run(60_000); // longer than gossip-to-the-dead: only reconnect can heal now
  net.heal();
  const healed = await net.runUntil(() => members.every((m) => m.numMembers() === 5), 60_000, 50);
  assert(healed !== null, "cluster should become whole after the partition heals");
  console.log(JSON.stringify({ partition_detected_ms: split, healed_ms: healed }));
});

Deno.test("sim: 300 members: one join reaches all within 2 s; steady state ≤ 2 KB/s per member", async () => {
  const { net, members } = await formCluster(300, { seed: 31 });
  await net.run(30_000);
  const joiner = Memberlist.create(simConfig(net, 300), net.createTransport());
  const start = net.now();
  await net.settle(joiner.join([members[7].transport.addr]));
  const t = await net.runUntil(
    () => members.every((m) => m.member("n300")?.status === "alive"),
    10_000,
    5,
  );
  assert(t !== null, "join never reached everyone");
  const joinMs = net.now() - start;
  // steady state: one full (scaled) push-pull period
  const b0 = net.bytesSent(), t0 = net.now();
  await net.run(150_000);
  const b1 = net.bytesSent(), secs = (net.now() - t0) / 1000;
  const perNode = (b1.udp - b0.udp + b1.tcp - b0.tcp) / 301 / secs;
  console.log(
    JSON.stringify({ nodes: 301, join_ms: joinMs, bytes_per_s_per_node: Math.round(perNode) }),
  );
  assert(joinMs <= 2000, `join took ${joinMs} ms`);
  assert(perNode <= 2048, `${perNode} B/s per member`);
});

Deno.test("sim: a live member's id cannot be taken by a joiner at another address", async () => {
  const { net, members } = await formCluster(3, { seed: 4 });
  const impostor = Memberlist.create(simConfig(net, 1), net.createTransport());
  const e = await assertRejects(
    () => net.settle(impostor.join([members[0].transport.addr])),
    DuplicateNodeIdError,
    `node id "n1" is already used by a live member at ${members[1].transport.addr}`,
  );
  assert(e.message.includes("unique id"), e.message);
  await net.run(5000);
  assertEquals(members[0].member("n1")?.addr, members[1].transport.addr);
});

Deno.test("sim: a crashed member restarted at the same address rejoins with a higher incarnation", async () => {
  const { net, members } = await formCluster(5, { seed: 9 });
  const addr = members[4].transport.addr;
  const died = members[4].localNode.incarnation;
  assert(await detect(net, members, 4) !== null);
  await members[4].shutdown();
  const reborn = Memberlist.create(simConfig(net, 4), net.createTransport(addr));
  await net.settle(reborn.join([members[0].transport.addr]));
  const t = await net.runUntil(
    () => members.slice(0, 4).every((m) => m.member("n4")?.status === "alive"),
    10_000,
  );
  assert(t !== null, "restarted member was not seen alive again");
  assert(reborn.localNode.incarnation > died, "must outbid the incarnation it died with");
});

Deno.test("sim: a seed restarted at its address before anyone saw it die is found at once", async () => {
  for (const seed of [3, 4, 5]) {
    const { net, members } = await formCluster(5, { seed });
    members[0].updateMetadata({ ...emptyMetadata("n0"), rpcPort: 1111 }); // its previous life
    await net.run(3000);
    const addr = members[0].transport.addr;
    net.crash(addr);
    await members[0].shutdown();
    await net.run(500); // a process manager's quick restart
    // The first agent has no seeds: it does not join. Peers' pings reach it at once, though.
    const reborn = Memberlist.create(
      simConfig(net, 0, { metadata: { ...emptyMetadata("n0"), rpcPort: 2222 } }),
      net.createTransport(addr),
    );
    const t = await net.runUntil(
      () =>
        reborn.numMembers() === 5 &&
        members.slice(1).every((m) => m.member("n0")?.meta?.rpcPort === 2222),
      10_000,
      100,
    );
    // Before, it answered every ping and stayed alone for 40-65 s, while the others kept its
    // previous life's metadata.
    assert(t !== null, `seed ${seed}: the restarted member stayed alone`);
    for (const m of [...members.slice(1), reborn]) await m.shutdown();
  }
});

Deno.test("sim: graceful leave is seen as 'leave', not 'dead'", async () => {
  const { net, members } = await formCluster(10, { seed: 12 });
  let leaves = 0, deaths = 0;
  for (const m of members.slice(1)) {
    m.on("leave", () => leaves++);
    m.on("dead", () => deaths++);
  }
  await net.settle(members[0].leave(3000));
  await members[0].shutdown();
  await net.run(10_000);
  assertEquals(leaves, 9);
  assertEquals(deaths, 0);
  for (const m of members.slice(1)) assertEquals(m.member("n0")?.status, "left");
});

Deno.test("sim: metadata published while leaving does not undo the leave", async () => {
  const { net, members } = await formCluster(10, { seed: 12 });
  let leaves = 0, deaths = 0;
  for (const m of members.slice(1)) {
    m.on("leave", () => leaves++);
    m.on("dead", () => deaths++);
  }
  const leaving = members[0].leave(3000);
  await net.run(1);
  // An agent's load report, a moment into its drain's leave. Before, its alive replaced the
  // leave in the queue (leave() returned at once) and peers later saw the member die.
  members[0].updateMetadata({ ...emptyMetadata("n0"), rpcPort: 1234 });
  await net.settle(leaving);
  await members[0].shutdown();
  await net.run(10_000);
  assertEquals([leaves, deaths], [9, 0]);
});

Deno.test("sim: a metadata update reaches every member", async () => {
  const { net, members } = await formCluster(50, { seed: 13 });
  const updates: string[] = [];
  for (const m of members) m.on("update", (e) => updates.push(e.member.id));
  members[3].updateMetadata({
    ...emptyMetadata("n3"),
    rpcPort: 7950,
    hosted: { model: "llama-3-8b", from: 8, to: 16 },
    version: "0.2.0",
  });
  const t = await net.runUntil(
    () => members.every((m) => m.member("n3")?.meta?.hosted?.from === 8),
    5000,
    10,
  );
  assert(t !== null, "metadata did not reach everyone");
  assertEquals(updates.length, 49);
  console.log(JSON.stringify({ metadata_update_reached_all_ms: t }));
});

Deno.test("sim: a DNS seed name expands to all its records", async () => {
  const net = new SimNetwork({ seed: 2 });
  const a = [0, 1, 2].map((i) => Memberlist.create(simConfig(net, i), net.createTransport()));
  const addrs = a.map((m) => m.transport.addr);
  const resolver = (host: string) => {
    assertEquals(host, "gossip.llm.svc.cluster.local");
    return Promise.resolve(addrs.map((x) => x.split(":")[0]));
  };
  const joiner = Memberlist.create(
    lanConfig({ nodeId: "j", rng: net.rng, resolver }),
    net.createTransport(),
  );
  const n = await net.settle(joiner.join(["gossip.llm.svc.cluster.local:7946"]));
  assertEquals(n, 3);
  assertEquals(joiner.numMembers(), 4);
});

Deno.test("sim: a member cut off briefly refutes the suspicion and is not declared dead", async () => {
  const { net, members } = await formCluster(20, { seed: 14 });
  let deaths = 0, suspects = 0, alive = 0;
  for (const m of members) {
    m.on("dead", () => deaths++);
    m.on("suspect", (e) => e.member.id === "n5" && suspects++);
    m.on("alive", (e) => e.member.id === "n5" && alive++);
  }
  const victim = members[5].transport.addr;
  const before = members[5].localNode.incarnation;
  net.partition([victim]);
  await net.runUntil(() => suspects > 0, 10_000, 10);
  net.heal();
  await net.run(20_000);
  assert(suspects > 0, "the cut-off member should have been suspected");
  assert(alive > 0, "and then refuted");
  assertEquals(deaths, 0);
  assert(members[5].localNode.incarnation > before, "refuting takes a higher incarnation");
});

Deno.test("sim: a member declared dead hears of it, refutes, tells its host once, and the others see it join again", async () => {
  let refuted = 0;
  const { net, members } = await formCluster(
    5,
    { seed: 23 },
    (i) => i === 3 ? { onDeathRefuted: () => void refuted++ } : {},
  );
  let deaths = 0, joins = 0;
  for (const m of members.slice(0, 3)) {
    m.on("dead", (e) => e.member.id === "n3" && deaths++);
    m.on("join", (e) => e.member.id === "n3" && joins++);
  }
  // Cut off past its suspicion timeout (frozen, or a partition): declared dead.
  net.partition([members[3].transport.addr]);
  await net.runUntil(() => deaths >= 3, 60_000, 10);
  assertEquals(deaths, 3, "the others declare it dead");
  assertEquals(refuted, 0, "nothing to refute while it hears nothing");
  net.heal();
  const t = await net.runUntil(
    () => members.every((m) => m.member("n3")?.status === "alive"),
    60_000,
    10,
  );
  assert(t !== null, "it is back in every view");
  assert(joins >= 3, `the others saw it join again: ${joins}`);
  // A refuted death is a new life for its host (NodeMetadata.life): heads may try it again.
  assert(refuted >= 1, "its host was told");
  const told = refuted;
  await net.run(10_000);
  assertEquals(refuted, told, "and not again without a new death");
});

Deno.test("sim: probeNow makes a crashed member suspect within one probe interval; a live one stays alive", async () => {
  const cfg = lanConfig({ nodeId: "x" });
  // Over several phases of the probe loops: without probeNow the first suspicion of a crashed
  // member among 20 takes whatever is left of the observer's round-robin round.
  for (let trial = 0; trial < 10; trial++) {
    const { net, members } = await formCluster(20, { seed: 300 + trial });
    await net.run(1000 + trial * 53);
    const [observer, victim, live] = [members[0], members[7], members[8]];
    const id = victim.localNode.id;
    net.crash(victim.transport.addr);
    const start = net.now();
    assert(observer.probeNow(id), "a probe is sent");
    assert(!observer.probeNow(id), "one probe at a time");
    assert(!observer.probeNow(observer.localNode.id), "never ourselves");
    assert(observer.probeNow(live.localNode.id));
    const t = await net.runUntil(() => observer.member(id)?.status !== "alive", 10_000, 5);
    assert(t !== null && net.now() - start <= cfg.probeInterval + 10, `trial ${trial}: ${t} ms`);
    assertEquals(observer.member(live.localNode.id)?.status, "alive");
  }
});

Deno.test("sim: a member restarted at a new address just after its death is taken up once its id is reclaimable", async () => {
  const { net, members } = await formCluster(5, { seed: 19 });
  assert(await detect(net, members, 4) !== null);
  await members[4].shutdown();
  // Before deadNodeReclaimTime has passed: its first announcements are refused as a conflict.
  const reborn = Memberlist.create(simConfig(net, 4), net.createTransport());
  await net.settle(reborn.join([members[0].transport.addr]));
  const reclaimMs = lanConfig({ nodeId: "x" }).deadNodeReclaimTime;
  const t = await net.runUntil(
    () =>
      members.slice(0, 4).every((m) =>
        m.member("n4")?.status === "alive" && m.member("n4")?.addr === reborn.transport.addr
      ),
    reclaimMs + 3000,
  );
  // Without taking the claim up later it waited for the next push-pull (30 s on the LAN preset).
  assert(t !== null, "the restarted member was not taken up once its id was reclaimable");
});

Deno.test("sim: an accusation at the highest incarnation is not refuted with a wrapped one", async () => {
  const warnings: string[] = [];
  const { net, members } = await formCluster(
    3,
    { seed: 3 },
    (i) => i === 1 ? { logger: (_level, msg) => void warnings.push(msg) } : {},
  );
  const before = members[1].localNode.incarnation;
  // A forged accusation (a key holder gone rogue, or a keyless cluster): 2^32 - 1.
  const rogue = net.createTransport();
  rogue.sendPacket(
    members[1].transport.addr,
    packet(encode({ type: "suspect", incarnation: 0xffffffff, node: "n1", from: "n2" })),
  );
  await net.run(2_000);
  // Before, the refutation went out as 0 (u32 wrap), which every peer ignores forever.
  assert(members[1].localNode.incarnation >= before, "no wrap to a lower incarnation");
  assert(members[1].localNode.incarnation <= 0xffffffff);
  assert(warnings.some((w) => w.includes("highest incarnation")), warnings.join("; "));
  // And the codec refuses to write a number it cannot carry.
  let threw = false;
  try {
    encode({ type: "suspect", incarnation: 2 ** 32, node: "n1", from: "n2" });
  } catch (e) {
    threw = e instanceof RangeError;
  }
  assert(threw, "a u32 field past 2^32 - 1 throws instead of wrapping");
});

Deno.test("sim: the member table is bounded; news of members past it is dropped and counted", async () => {
  const { net, members } = await formCluster(3, { seed: 5 }, () => ({ maxMembers: 6 }));
  const rogue = net.createTransport();
  for (let i = 0; i < 10; i++) {
    rogue.sendPacket(
      members[0].transport.addr,
      packet(encode({
        type: "alive",
        incarnation: 1,
        node: `fake-${i}`,
        addr: `10.9.9.${i}:7946`,
        meta: new Uint8Array(0),
      })),
    );
  }
  await net.run(500);
  assertEquals(members[0].numMembers() <= 6, true, `${members[0].numMembers()} members`);
  assert(
    members[0].stats.droppedPackets.full >= 4,
    JSON.stringify(members[0].stats.droppedPackets),
  );
});

Deno.test("sim: probing a crashed member leaves the healthy probers' scores alone (nacks in time)", async () => {
  const { net, members } = await formCluster(20, { seed: 7 });
  await net.run(5000);
  net.crash(members[19].transport.addr);
  const t0 = net.now();
  let worst = 0;
  while (net.now() - t0 < 15_000) {
    await net.run(50);
    for (const m of members.slice(0, 19)) worst = Math.max(worst, m.healthScore);
  }
  // Before, the relays' nacks came after the prober stopped counting them: each probe of the
  // dead member raised the prober's score by 3, and it probed four times slower.
  assertEquals(worst, 0);
  for (const m of members) m.shutdown();
});

Deno.test("sim: pings from made-up strangers cannot make a member dial another address", async () => {
  const { net, members } = await formCluster(5, { seed: 1 });
  await net.run(2000);
  const attacker = net.createTransport();
  attacker.onPacket(() => {});
  const victim = net.createTransport();
  let toVictim = 0;
  victim.onStream((s) => {
    toVictim++;
    s.close();
  });
  let toAttacker = 0;
  attacker.onStream((s) => {
    toAttacker++;
    s.close();
  });
  const target = members[0];
  for (let i = 0; i < 200; i++) {
    const ping = { type: "ping" as const, seq: i, target: "n0", sourceId: `fake-${i}` };
    // Naming the victim's address (before: one sync stream to it per made-up id) ...
    attacker.sendPacket(target.transport.addr, encode({ ...ping, sourceAddr: victim.addr }));
    // ... or its own: synced with, but at most once per probe interval.
    attacker.sendPacket(target.transport.addr, encode({ ...ping, sourceAddr: attacker.addr }));
  }
  await net.run(3000);
  assertEquals(toVictim, 0);
  assert(toAttacker <= 1, `${toAttacker} streams to the stranger within one probe interval`);
  for (const m of members) await m.shutdown();
});

Deno.test("sim: a restarted member's life starts above its last one, so a replayed dead of that life changes nothing", async () => {
  // A life started at incarnation 0: a recorded "dead at 14" of the previous life, replayed after
  // the restart, marked the member dead on every agent.
  let wall = 1_000_000;
  const { net, members } = await formCluster(4, { seed: 21 }, () => ({
    startIncarnation: () => wall,
  }));
  const addr = members[3].transport.addr;
  const old = members[3].localNode.incarnation;
  await members[3].shutdown();
  await net.run(60_000); // declared dead, then forgotten
  wall += 120;
  const reborn = Memberlist.create(
    { ...simConfig(net, 3), startIncarnation: () => wall },
    net.createTransport(addr),
  );
  await net.settle(reborn.join([members[0].transport.addr]));
  await net.runUntil(() => members[0].member("n3")?.status === "alive", 10_000);
  assert(reborn.localNode.incarnation >= wall && wall > old);
  // what was said of the last life when it died, recorded then and replayed now
  const dead = encode({ type: "dead", incarnation: old, node: "n3", from: "n1" });
  const rogue = net.createTransport();
  for (const m of members.slice(0, 3)) rogue.sendPacket(m.transport.addr, packet(dead));
  await net.run(2_000);
  for (const m of members.slice(0, 3)) assertEquals(m.member("n3")?.status, "alive");
});
