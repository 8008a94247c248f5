// Dropped gossip worded by what it was: a key mismatch (another key, plaintext to a keyed member,
// sealed to a member without keys) or bytes that are not gossip at all (llmctl or an HTTP
// client pointed at the gossip port), each kind warned at most once a minute.
import { assert, assertEquals } from "../../support/assert.ts";
import {
  encode,
  encrypt,
  Keyring,
  localConfig,
  Memberlist,
  splitHostPort,
  WIRE_VERSION,
} from "../../../cluster/gossip/mod.ts";
import { stranger } from "../../../cluster/gossip/drops.ts";
import { open, unpack } from "../../../cluster/gossip/net.ts";
import { packet } from "./helpers.ts";
import { FrameError } from "../../../cluster/gossip/transport.ts";

const key = (b: number) => new Uint8Array(32).fill(b);
const ping = encode({ type: "ping", seq: 1, target: "x", sourceId: "y", sourceAddr: "1.2.3.4:5" });

Deno.test("drops: what a dropped packet was is told from its bytes", () => {
  /** What a member of cluster "default" holding `k` (or no key) makes of `raw`, classified. */
  const sees = (k: Uint8Array | null, raw: Uint8Array) => {
    let e: unknown = null;
    try {
      unpack(open({ keyring: k ? new Keyring(k) : null, clusterName: "default" }, raw));
    } catch (err) {
      e = err;
    }
    return stranger(e, raw, k !== null);
  };
  const sealedOther = packet(ping, { key: key(2) });
  assertEquals(sees(key(1), sealedOther), "wrong-key");
  assertEquals(sees(key(1), packet(ping)), "plaintext");
  assertEquals(sees(key(1), new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n")), "not-gossip");
  assertEquals(sees(key(1), new Uint8Array([7])), "not-gossip");
  // Without keys: a keyed member's envelope, or something else.
  assertEquals(sees(null, sealedOther), "sealed");
  assertEquals(sees(null, new TextEncoder().encode("hello")), "not-gossip");
  // Another cluster, with or without keys (the header is read before any key is tried).
  assertEquals(sees(key(1), packet(ping, { key: key(1), cluster: "other" })), "cluster");
  assertEquals(sees(null, packet(ping, { cluster: "other" })), "cluster");
  // Another wire version; and gossip of a release before the header (a message or envelope).
  const v2 = packet(ping);
  v2[1] = WIRE_VERSION + 1;
  assertEquals(sees(null, v2), "wire-version");
  assertEquals(sees(key(1), v2), "wire-version");
  assertEquals(sees(null, ping), "old-wire");
  assertEquals(sees(key(1), ping), "old-wire");
  assertEquals(sees(key(1), encrypt(key(1), ping)), "old-wire");
  // A stream whose first bytes announce a frame no member sends.
  const head = new TextEncoder().encode("PRI * HT");
  assertEquals(stranger(new FrameError(head, "too large"), undefined, true), "not-gossip");
  assertEquals(stranger(new FrameError(head, "too large"), undefined, false), "not-gossip");
  assertEquals(stranger(new Error("timeout"), undefined, false), null);
});

async function until(pred: () => boolean, ms: number): Promise<boolean> {
  const t0 = Date.now();
  while (!pred() && Date.now() - t0 < ms) await new Promise((r) => setTimeout(r, 20));
  return pred();
}

/** Open a TCP connection to `addr`, write `bytes`, and close it once the member has read them. */
async function sendRaw(addr: string, bytes: Uint8Array): Promise<void> {
  const { host, port } = splitHostPort(addr);
  const c = await Deno.connect({ hostname: host, port });
  try {
    await c.write(bytes);
    // The member closes a stream it cannot read; wait for that (or give up after a second).
    await Promise.race([
      c.read(new Uint8Array(16)).catch(() => null),
      new Promise((r) => setTimeout(r, 1000)),
    ]);
  } finally {
    try {
      c.close();
    } catch { /* closed by the member */ }
  }
}

const HTTP2_PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

for (const keyed of [false, true]) {
  Deno.test(`drops: a client on the gossip port is not worded as a key mismatch, and is warned once a minute (${keyed ? "with" : "without"} keys; real sockets)`, async () => {
    const logs: string[] = [];
    const m = await Memberlist.listen(
      localConfig({
        nodeId: "m",
        keyring: keyed ? new Keyring(key(1)) : null,
        logger: (level, msg, f) => logs.push(`${level} ${msg} ${JSON.stringify(f)}`),
      }),
      { port: 0 },
    );
    try {
      // llmctl pointed at the gossip port (its HTTP/2 preface), then curl (HTTP/1).
      await sendRaw(m.transport.addr, HTTP2_PREFACE);
      assert(await until(() => logs.length > 0, 2000), "a warning");
      assertEquals(logs.length, 1, logs.join("\n"));
      assert(logs[0].startsWith("warn ") && logs[0].includes("not gossip at all"), logs[0]);
      // Before: "is a member running with --gossip-keys while this one runs without?"
      assert(!logs[0].includes("--gossip-keys"), logs[0]);
      assert(logs[0].includes('"starts":"PRI * HT"'), logs[0]);
      await sendRaw(m.transport.addr, new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
      await new Promise((r) => setTimeout(r, 100));
      assertEquals(logs.length, 1, "rate-limited: one warning a minute\n" + logs.join("\n"));
      assertEquals(m.stats.droppedPackets.malformed + m.stats.droppedPackets.decrypt, 2);
      // A key mismatch is still said, on its own rate limit.
      const other = await Memberlist.listen(
        localConfig({ nodeId: "o", keyring: keyed ? new Keyring(key(2)) : new Keyring(key(3)) }),
        { port: 0 },
      );
      try {
        await other.join([m.transport.addr]).catch(() => {});
        assert(await until(() => logs.length === 2, 2000), logs.join("\n"));
        assert(logs[1].includes("--gossip-keys") && !logs[1].includes("not gossip"), logs[1]);
      } finally {
        await other.shutdown();
      }
    } finally {
      await m.shutdown();
    }
  });
}

Deno.test("drops: plaintext gossip reaching a member with keys names the member without them (real sockets)", async () => {
  const logs: string[] = [];
  const seed = await Memberlist.listen(
    localConfig({
      nodeId: "seed",
      keyring: new Keyring(key(1)),
      logger: (level, msg, f) => logs.push(`${level} ${msg} ${JSON.stringify(f)}`),
    }),
    { port: 0 },
  );
  const plain = await Memberlist.listen(localConfig({ nodeId: "plain" }), { port: 0 });
  try {
    await plain.join([seed.transport.addr]).catch(() => {});
    assert(await until(() => logs.length > 0, 2000), "a warning");
    assert(
      logs[0].includes("plaintext gossip") && logs[0].includes("without --gossip-keys"),
      logs[0],
    );
    assertEquals(seed.numMembers(), 1);
  } finally {
    await plain.shutdown();
    await seed.shutdown();
  }
});
