// Real sockets: five member processes on loopback form a cluster from one seed; kill -9 one,
// every other marks it dead; restart it, it rejoins; a metadata update is seen by all; a
// duplicate id is refused with a clear error.
import { assert, assertEquals } from "../../support/assert.ts";
import { NodeProc, until } from "./procs.ts";

const ARGS = [
  "--bind",
  "127.0.0.1",
  "--preset",
  "lan",
  "--keys",
  btoa(String.fromCharCode(...new Uint8Array(32).fill(3))),
];

Deno.test("real sockets: 5 processes, kill -9, restart, metadata update, duplicate id", async () => {
  const procs: NodeProc[] = [];
  try {
    const seed = new NodeProc("n0", [...ARGS, "--port", "0"]);
    procs.push(seed);
    await seed.waitFor((e) => e.event === "ready", 20_000, "ready");
    for (let i = 1; i < 5; i++) {
      procs.push(new NodeProc(`n${i}`, [...ARGS, "--port", "0", "--seeds", seed.addr]));
    }
    await Promise.all(procs.map((p) => p.waitFor((e) => e.event === "ready", 20_000, "ready")));
    const ids = procs.map((p) => p.id);
    const formed = await until(
      () => procs.every((p) => ids.every((id) => id === p.id || p.statusOf(id) === "alive")),
      20_000,
      "all 5 to see each other",
    );

    // kill -9 one member: every other marks it dead
    const victim = procs[4];
    const victimPort = victim.addr.split(":")[1];
    const killedAt = performance.now();
    await victim.kill();
    const detected = await until(
      () => procs.slice(0, 4).every((p) => p.statusOf("n4") === "dead"),
      15_000,
      "n4 to be declared dead by all",
    );

    // restart it on the same port: it rejoins
    const reborn = new NodeProc("n4", [...ARGS, "--port", victimPort, "--seeds", seed.addr]);
    procs[4] = reborn;
    const rejoined = await until(
      () =>
        procs.slice(0, 4).every((p) => p.statusOf("n4") === "alive") &&
        reborn.events.some((e) => e.event === "joined"),
      20_000,
      "n4 to rejoin",
    );

    // metadata update on n2 reaches all
    await procs[2].send({
      cmd: "meta",
      meta: { rpcPort: 7950, hosted: { model: "tiny", from: 2, to: 4 }, version: "9.9.9" },
    });
    await Promise.all(
      procs.filter((p) => p.id !== "n2").map((p) =>
        p.waitFor(
          (e) => e.event === "update" && e.member.id === "n2" && e.member.meta?.version === "9.9.9",
          10_000,
          "n2's update",
        )
      ),
    );

    // duplicate id at another address is refused, and the real n1 is untouched
    const dup = new NodeProc("n1", [...ARGS, "--port", "0", "--seeds", seed.addr]);
    const err = await dup.waitFor((e) => e.event === "error", 20_000, "duplicate-id error");
    await dup.close();
    assertEquals(err.name, "DuplicateNodeIdError");
    assert(
      String(err.error).includes(
        `node id "n1" is already used by a live member at ${procs[1].addr}`,
      ),
      err.error,
    );
    assertEquals(procs[0].statusOf("n1"), "alive");

    console.log(JSON.stringify({
      real_sockets: {
        members: 5,
        formed_ms: Math.round(formed),
        kill9_all_dead_ms: Math.round(detected),
        rejoin_ms: Math.round(rejoined),
        since_kill_ms: Math.round(performance.now() - killedAt),
      },
    }));
    assert(
      detected <= 6000,
      `detection took ${detected} ms on real sockets (LAN preset bound 6 s)`,
    );
  } finally {
    await Promise.all(procs.map((p) => p.kill()));
  }
});
