// The cluster name as a membership boundary (memberlist's Label), on real UDP/TCP sockets on
// loopback: two clusters given seeds of each other stay apart, in plaintext and encrypted, the
// join fails naming both names, the seed counts and names what it dropped; members of one name
// join as before. The header itself: layout, and a name the header cannot carry.
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";
import {
  JoinError,
  Keyring,
  labelHeader,
  localConfig,
  Memberlist,
  WIRE_MAGIC,
  WIRE_VERSION,
} from "../../../cluster/gossip/mod.ts";

Deno.test("label: the header is magic | version | length | name, and a name must fit it", () => {
  assertEquals([...labelHeader("lab")], [WIRE_MAGIC, WIRE_VERSION, 3, 0x6c, 0x61, 0x62]);
  assertThrows(() => labelHeader(""), Error, "1 to 255");
  assertThrows(
    () => Memberlist.create(localConfig({ nodeId: "a", clusterName: "" }), null!),
    Error,
    "1 to 255",
  );
  assertThrows(() => labelHeader("x".repeat(256)), Error, "1 to 255");
});

async function until(pred: () => boolean, ms: number): Promise<boolean> {
  const t0 = Date.now();
  while (!pred() && Date.now() - t0 < ms) await new Promise((r) => setTimeout(r, 25));
  return pred();
}

for (const keyed of [false, true]) {
  const how = keyed ? "encrypted" : "plaintext";
  Deno.test(`label: two clusters given seeds of each other stay apart, the join naming both names (${how}; real sockets)`, async () => {
    // One key for all four: only the name keeps them apart (with different keys, the key would).
    const keyring = () => keyed ? new Keyring(new Uint8Array(32).fill(9)) : null;
    const logs: string[] = [];
    const member = (id: string, clusterName: string) =>
      Memberlist.listen(
        localConfig({
          nodeId: id,
          clusterName,
          keyring: keyring(),
          logger: (level, msg, f) => logs.push(`${id} ${level} ${msg} ${JSON.stringify(f)}`),
        }),
        { port: 0 },
      );
    const a = [await member("a1", "alpha"), await member("a2", "alpha")];
    const b = [await member("b1", "beta"), await member("b2", "beta")];
    try {
      // Same name: joins as before.
      assertEquals(await a[1].join([a[0].transport.addr]), 1);
      assertEquals(await b[1].join([b[0].transport.addr]), 1);
      assert(await until(() => [...a, ...b].every((m) => m.numMembers() === 2), 3000));
      // Across names: refused, with both names in the error.
      for (const [joiner, seed] of [[b[0], a[0]], [a[1], b[1]]]) {
        let err: Error | undefined;
        await joiner.join([seed.transport.addr]).catch((e) => (err = e));
        assert(err instanceof JoinError, String(err));
        const [mine, theirs] = joiner === b[0] ? ["beta", "alpha"] : ["alpha", "beta"];
        assert(
          err.message.includes(`the seed is in cluster "${theirs}"`) &&
            err.message.includes(`this agent in cluster "${mine}"`) &&
            err.message.includes("--cluster-name"),
          err.message,
        );
      }
      // Probes, gossip and push-pulls for a while: still two clusters of two.
      await new Promise((r) => setTimeout(r, 1500));
      for (const m of a) assertEquals(m.members().map((x) => x.id).sort(), ["a1", "a2"]);
      for (const m of b) assertEquals(m.members().map((x) => x.id).sort(), ["b1", "b2"]);
      // The seeds counted the strangers' streams and said whose they were.
      assert(a[0].stats.droppedPackets.cluster >= 1, JSON.stringify(a[0].stats.droppedPackets));
      assert(b[1].stats.droppedPackets.cluster >= 1, JSON.stringify(b[1].stats.droppedPackets));
      const warned = logs.find((l) => l.startsWith("a1 warn dropped gossip of another cluster"));
      assert(
        warned?.includes('"theirs":"beta"') && warned.includes('"ours":"alpha"'),
        logs.join("\n"),
      );
      assertEquals(a[0].stats.droppedPackets.decrypt, 0, "not worded as a key mismatch");
    } finally {
      for (const m of [...a, ...b]) await m.shutdown();
    }
  });
}

Deno.test('label: members without a cluster name set share the default one, "default"', async () => {
  const x = await Memberlist.listen(localConfig({ nodeId: "x" }), { port: 0 });
  const y = await Memberlist.listen(localConfig({ nodeId: "y", clusterName: "default" }), {
    port: 0,
  });
  const z = await Memberlist.listen(localConfig({ nodeId: "z", clusterName: "other" }), {
    port: 0,
  });
  try {
    assertEquals(x.config.clusterName, "default");
    assertEquals(await y.join([x.transport.addr]), 1);
    await z.join([x.transport.addr]).then(
      () => assert(false, "joined a cluster of another name"),
      (e: Error) => assert(e.message.includes('"default"'), e.message),
    );
  } finally {
    for (const m of [x, y, z]) await m.shutdown();
  }
});
