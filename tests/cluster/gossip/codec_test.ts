// Codec round-trips, metadata validation, and fast-check fuzzing of the receive loop:
// random and mutated packets (plain and sealed) must never throw past it, nor change state.
import fc from "fast-check";
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";
import {
  decode,
  DecodeError,
  decodeMetadata,
  encode,
  encodeMetadata,
  Keyring,
  labelHeader,
  lanConfig,
  MAX_METADATA_BYTES,
  Memberlist,
  type Message,
  MetadataError,
  type NodeMetadata,
  SimNetwork,
  WIRE_MAGIC,
  WIRE_VERSION,
} from "../../../cluster/gossip/mod.ts";
import { packet } from "./helpers.ts";

const meta: NodeMetadata = {
  id: "gpu-1",
  addresses: ["10.0.0.5", "fd00::5"],
  rpcPort: 7950,
  metricsPort: 9090,
  resources: {
    memoryBytes: 24_000_000_000,
    cores: 16,
    backend: "webgpu",
    adapter: "NVIDIA RTX 4090",
    speed: 812.5,
  },
  hosted: { model: "llama-3-8b-instruct", from: 0, to: 16 },
  version: "0.1.0",
  httpPort: 8080,
  model: "llama-3-8b-instruct",
};

const samples: Message[] = [
  { type: "ping", seq: 1, target: "b", sourceId: "a", sourceAddr: "10.0.0.1:7946" },
  {
    type: "indirectPing",
    seq: 2,
    target: "c",
    targetAddr: "10.0.0.3:7946",
    sourceId: "a",
    sourceAddr: "10.0.0.1:7946",
    nack: true,
  },
  { type: "ack", seq: 3 },
  { type: "nack", seq: 4 },
  { type: "suspect", incarnation: 5, node: "c", from: "a" },
  {
    type: "alive",
    incarnation: 6,
    node: "gpu-1",
    addr: "10.0.0.5:7946",
    meta: encodeMetadata(meta),
  },
  { type: "dead", incarnation: 7, node: "c", from: "b" },
  { type: "user", data: new Uint8Array([1, 2, 3]) },
  { type: "compound", parts: [encode({ type: "ack", seq: 9 }), encode({ type: "nack", seq: 10 })] },
  {
    type: "pushPull",
    join: true,
    from: "a",
    nodes: [{
      id: "a",
      addr: "10.0.0.1:7946",
      incarnation: 1,
      status: "suspect",
      meta: new Uint8Array([9]),
    }],
  },
  { type: "error", code: "duplicate-id", message: "node id “a” taken" },
  {
    type: "digest",
    from: "a",
    entries: [{ id: "b", incarnation: 3, status: "dead", hash: 0xdeadbeef }],
  },
  {
    type: "delta",
    from: "b",
    nodes: [{
      id: "c",
      addr: "[fd00::3]:7946",
      incarnation: 2,
      status: "left",
      meta: new Uint8Array(),
    }],
    want: ["a", "d"],
  },
];

Deno.test("codec: every message type round-trips", () => {
  for (const m of samples) assertEquals(decode(encode(m)), m);
});

Deno.test("codec: truncation, trailing bytes and unknown types throw DecodeError", () => {
  for (const m of samples) {
    const b = encode(m);
    for (let cut = 0; cut < b.length; cut++) {
      assertThrows(() => decode(b.subarray(0, cut)), DecodeError);
    }
    const longer = new Uint8Array(b.length + 1);
    longer.set(b);
    assertThrows(() => decode(longer), DecodeError, "trailing");
  }
  assertThrows(() => decode(new Uint8Array([200])), DecodeError, "unknown message type 200");
  // a push-pull that claims a billion nodes is refused before allocating
  assertThrows(
    () => decode(new Uint8Array([10, 0, 1, 0x61, 0x3b, 0x9a, 0xca, 0x00])),
    DecodeError,
    "claims",
  );
});

Deno.test("metadata: round-trips and validates with clear errors", () => {
  assertEquals(decodeMetadata(encodeMetadata(meta)), meta);
  assertEquals(decodeMetadata(encodeMetadata({ ...meta, hosted: null })).hosted, null);
  const failed = { ...meta, model: "", stageError: "layers [4,5): file truncated" };
  assertEquals(decodeMetadata(encodeMetadata(failed)), failed);
  const big = {
    ...meta,
    addresses: Array.from({ length: 16 }, (_, i) => `very-long-hostname-${i}.example.internal`),
  };
  const e = assertThrows(
    () => encodeMetadata(big),
    MetadataError,
    `limit is ${MAX_METADATA_BYTES}`,
  );
  assert(/encodes to \d+ bytes/.test(e.message), e.message);
  assertThrows(() => encodeMetadata({ ...meta, rpcPort: 70000 }), MetadataError, "rpcPort 70000");
  assertThrows(
    () => encodeMetadata({ ...meta, hosted: { model: "m", from: 5, to: 2 } }),
    MetadataError,
    "[5, 2)",
  );
  assertThrows(() => encodeMetadata({ ...meta, id: "" }), MetadataError, "id is empty");
  assertThrows(
    () => encodeMetadata({ ...meta, version: "x".repeat(300) }),
    MetadataError,
    "version is 300 bytes",
  );
  assert(encodeMetadata(meta).length <= MAX_METADATA_BYTES);
});

Deno.test("metadata: the KV reservation round-trips, with or without a data port", () => {
  const kvReserve = { context: 4096, sessions: 16 };
  assertEquals(decodeMetadata(encodeMetadata({ ...meta, kvReserve })).kvReserve, kvReserve);
  const both = { ...meta, dataPort: 7951, kvReserve };
  assertEquals(decodeMetadata(encodeMetadata(both)).dataPort, 7951);
  assertEquals(decodeMetadata(encodeMetadata(both)).kvReserve, kvReserve);
  // Metadata of an agent that announces none reads as before: no reservation.
  assertEquals(decodeMetadata(encodeMetadata({ ...meta, dataPort: 7951 })).kvReserve, undefined);
  assertThrows(
    () => encodeMetadata({ ...meta, kvReserve: { context: -1, sessions: 1 } }),
    MetadataError,
    "kvReserve",
  );
});

Deno.test("metadata: drained round-trips, alone or after a KV reservation; unknown flag bits are ignored", () => {
  // Before, a drained member looked like one started with --no-model (model ""): `nodes list`
  // could not say so, and its budget counted in the cluster's.
  const alone = decodeMetadata(encodeMetadata({ ...meta, drained: true }));
  assertEquals(alone.drained, true);
  assertEquals(alone.kvReserve, undefined);
  const kvReserve = { context: 4096, sessions: 16 };
  const both = decodeMetadata(encodeMetadata({ ...meta, kvReserve, drained: true }));
  assertEquals([both.drained, both.kvReserve], [true, kvReserve]);
  assertEquals(decodeMetadata(encodeMetadata({ ...meta, kvReserve })).drained, undefined);
  assertEquals(decodeMetadata(encodeMetadata({ ...meta, drained: false })).drained, undefined);
  // A newer agent's flag bits beside drained's.
  const bytes = encodeMetadata({ ...meta, kvReserve, drained: true });
  bytes[bytes.length - 1] |= 0x80;
  assertEquals(decodeMetadata(bytes).drained, true);
});

Deno.test("metadata: a life round-trips alone, drained, or after a KV reservation; none reads as none", () => {
  // Heads exclude a failed stage by its announcement; the life tells a restart or a comeback
  // from a false death (a new announcement) from gossip reviving a dead one.
  const life = "k3x9a2bq.2";
  assertEquals(decodeMetadata(encodeMetadata({ ...meta, life })).life, life);
  const kvReserve = { context: 4096, sessions: 16 };
  const all = decodeMetadata(encodeMetadata({ ...meta, kvReserve, drained: true, life }));
  assertEquals([all.life, all.drained, all.kvReserve], [life, true, kvReserve]);
  const alone = decodeMetadata(encodeMetadata({ ...meta, life }));
  assertEquals([alone.drained, alone.kvReserve], [undefined, undefined]);
  assertEquals(decodeMetadata(encodeMetadata(meta)).life, undefined);
  assertThrows(() => encodeMetadata({ ...meta, life: "x".repeat(256) }), MetadataError, "life");
  // A newer agent's fields after the life are read past: a rolling upgrade keeps both versions
  // in each other's view.
  const newer = new Uint8Array([...encodeMetadata({ ...meta, life }), 3, 1, 2, 3]);
  assertEquals(decodeMetadata(newer).life, life);
});

Deno.test("metadata: an HTTPS API round-trips beside drained and a life; none reads as none", () => {
  // Agents forwarding API requests to a member must know to speak TLS to it.
  assertEquals(decodeMetadata(encodeMetadata({ ...meta, apiTls: true })).apiTls, true);
  const all = decodeMetadata(encodeMetadata({ ...meta, apiTls: true, drained: true, life: "a.1" }));
  assertEquals([all.apiTls, all.drained, all.life], [true, true, "a.1"]);
  assertEquals(decodeMetadata(encodeMetadata({ ...meta, drained: true })).apiTls, undefined);
  assertEquals(decodeMetadata(encodeMetadata(meta)).apiTls, undefined);
});

/** A member on a quiet simulated network, and a way to poke packets into its receive loop. */
function target(keyring: Keyring | null) {
  const net = new SimNetwork({ seed: 3 });
  const t = net.createTransport();
  const ml = Memberlist.create(lanConfig({ nodeId: "victim", rng: net.rng, keyring }), t);
  const inject = (b: Uint8Array) => t.packetHandler("10.9.9.9:7946", b);
  return { ml, inject };
}

/** Valid messages to mutate: each sample alone, plus some compounds. */
const valid = samples.filter((m) => !["pushPull", "error", "digest", "delta"].includes(m.type)).map(
  encode,
);
/** The same as packets of cluster "default": behind the cluster-name header. */
const framed = valid.map((m) => packet(m));

// Mutations of header-less messages and of whole packets: flips land in the header too.
const mutated = fc.tuple(
  fc.constantFrom(...valid, ...framed),
  fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
  fc.nat({ max: 8 }),
).map(([b, flips, cut]) => {
  const out = b.slice(0, Math.max(1, b.length - cut));
  for (const [i, v] of flips) out[i % out.length] = v;
  return out;
});

Deno.test("fuzz: 10 000 random and mutated plaintext packets never escape the receive loop", () => {
  const { ml, inject } = target(null);
  const dropped = () => Object.values(ml.stats.droppedPackets).reduce((a, b) => a + b, 0);
  fc.assert(
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 1500 }), mutated), (bytes) => {
      inject(bytes); // must not throw
      return ml.stats.droppedPackets.internal === 0;
    }),
    { numRuns: 10_000, seed: 42 },
  );
  assert(dropped() > 5000, `most fuzz packets should be dropped as malformed (got ${dropped()})`);
});

Deno.test("fuzz: 10 000 random and tampered sealed packets are dropped, state untouched", () => {
  const key = new Uint8Array(32).fill(7);
  const { ml, inject } = target(new Keyring(key));
  const before = JSON.stringify(ml.allMembers().map((m) => [m.id, m.status, m.incarnation]));
  const sealedAlive = packet(
    encode({
      type: "alive",
      incarnation: 1,
      node: "intruder",
      addr: "10.6.6.6:7946",
      meta: new Uint8Array(),
    }),
    { key },
  );
  const tampered = fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })).map(([i, x]) => {
    const b = sealedAlive.slice();
    b[i % b.length] ^= x; // any single-byte change must fail authentication
    return b;
  });
  const wrongKey = fc.uint8Array({ minLength: 32, maxLength: 32 }).filter((k) =>
    k.some((v, i) => v !== key[i])
  )
    .chain((k) => fc.constantFrom(...valid).map((p) => packet(p, { key: k })));
  let n = 0;
  fc.assert(
    fc.property(
      fc.oneof(fc.uint8Array({ maxLength: 1500 }), tampered, wrongKey, mutated),
      (bytes) => {
        n++;
        inject(bytes);
        return ml.stats.droppedPackets.internal === 0;
      },
    ),
    { numRuns: 10_000, seed: 7 },
  );
  assertEquals(JSON.stringify(ml.allMembers().map((m) => [m.id, m.status, m.incarnation])), before);
  // Each is counted once: as a decrypt drop, or, where the bytes' header was hit (or there is
  // none), under the header's reason (malformed, cluster, version).
  const d = ml.stats.droppedPackets;
  assertEquals(
    d.decrypt + d.malformed + d.cluster + d.version,
    n,
    "every unauthenticated packet is dropped and counted",
  );
  assert(
    d.decrypt > n / 4,
    `most tampered or wrong-key packets fail authentication (${d.decrypt})`,
  );
  // and the untampered one does get in: the test is not vacuous
  inject(sealedAlive);
  assertEquals(ml.member("intruder")?.status, "alive");
});

Deno.test("fuzz: 10 000 random and mutated stream frames (push-pull, digest, TCP ping) are contained", async () => {
  const net = new SimNetwork({ seed: 5 });
  const t = net.createTransport();
  const ml = Memberlist.create(lanConfig({ nodeId: "victim", rng: net.rng }), t);
  const streamSamples = samples.filter((m) =>
    ["pushPull", "digest", "delta", "ping"].includes(m.type)
  ).map(encode).flatMap((b) => [b, packet(b)]);
  const frames = fc.oneof(
    fc.uint8Array({ maxLength: 600 }),
    fc.tuple(
      fc.constantFrom(...streamSamples),
      fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 4 }),
      fc.nat(6),
    )
      .map(([b, flips, cut]) => {
        const out = b.slice(0, Math.max(1, b.length - cut));
        for (const [i, v] of flips) out[i % out.length] = v;
        return out;
      }),
  );
  await fc.assert(
    fc.asyncProperty(frames, fc.uint8Array({ maxLength: 64 }), async (first, second) => {
      const queue = [first, second];
      const fake = {
        remoteAddr: "10.9.9.9:7946",
        send: () => {},
        receive: () =>
          queue.length ? Promise.resolve(queue.shift()!) : Promise.reject(new Error("closed")),
        close: () => {},
      };
      t.streamHandler!(fake); // must not throw, and must not leave a rejected promise behind
      for (let i = 0; i < 8; i++) await null;
      return ml.stats.droppedPackets.internal === 0;
    }),
    { numRuns: 10_000, seed: 11 },
  );
  await ml.shutdown();
});

/** An alive for a member "intruder": applied, it shows in the victim's table. */
const intruder = encode({
  type: "alive",
  incarnation: 1,
  node: "intruder",
  addr: "10.6.6.6:7946",
  meta: new Uint8Array(),
});

/** What the receive loop must count a packet under, read from its header alone (or null). */
function headerVerdict(b: Uint8Array): "malformed" | "version" | "cluster" | null {
  if (b.length < 3 || b[0] !== WIRE_MAGIC) return "malformed";
  if (b[1] !== WIRE_VERSION) return "version";
  if (b[2] === 0 || 3 + b[2] > b.length) return "malformed";
  let name: string;
  try {
    name = new TextDecoder("utf-8", { fatal: true }).decode(b.subarray(3, 3 + b[2]));
  } catch {
    return "malformed";
  }
  return name === "default" ? null : "cluster";
}

Deno.test("fuzz: 10 000 packets under random cluster-name headers are counted by the header's fault, only ours applied", () => {
  const { ml, inject } = target(null);
  const header = fc.record({
    magic: fc.oneof(fc.constant(WIRE_MAGIC), fc.nat(255)),
    version: fc.oneof(fc.constant(WIRE_VERSION), fc.nat(255)),
    name: fc.oneof(
      fc.constantFrom("default", "Default", "defaul", "default ", "other", "défault"),
      fc.string({ maxLength: 300 }),
      fc.uint8Array({ maxLength: 12 }).map((b) => String.fromCharCode(...b)),
    ),
    lenDelta: fc.oneof(fc.constant(0), fc.integer({ min: -2, max: 2 })),
    cut: fc.oneof(fc.constant(0), fc.nat(40)),
  });
  const seen = { malformed: 0, version: 0, cluster: 0, ours: 0 };
  fc.assert(
    fc.property(header, ({ magic, version, name, lenDelta, cut }) => {
      const nb = new TextEncoder().encode(name);
      const len = Math.max(0, Math.min(255, nb.length + lenDelta));
      const all = new Uint8Array([magic, version, len, ...nb, ...intruder]);
      const b = all.subarray(0, Math.max(0, all.length - cut));
      const expected = headerVerdict(b);
      const before = { ...ml.stats.droppedPackets };
      inject(b); // must not throw
      const d = ml.stats.droppedPackets;
      if (d.internal !== 0) return false;
      if (expected === null) {
        seen.ours++;
        // Ours: nothing counted against the header (the body may still be malformed).
        return d.cluster === before.cluster && d.version === before.version;
      }
      seen[expected]++;
      // Counted once, under the header's fault, and nothing else.
      return Object.entries(d).every(([k, v]) =>
        v === before[k as keyof typeof before] + (k === expected ? 1 : 0)
      );
    }),
    { numRuns: 10_000, seed: 13 },
  );
  for (const [k, n] of Object.entries(seen)) {
    assert(n > 20, `${k}: ${n} cases (${JSON.stringify(seen)})`);
  }
  // Only a whole header of ours let the alive through; none of another cluster did.
  const ids = ml.allMembers().map((m) => m.id).sort();
  assert(ids.every((id) => id === "victim" || id === "intruder"), ids.join());
});

Deno.test("fuzz: sealed packets relabelled, stripped or re-versioned never open (the header is the AAD)", () => {
  const key = new Uint8Array(32).fill(7);
  const { ml, inject } = target(new Keyring(key));
  const other = fc.string({ minLength: 1, maxLength: 40 }).filter((n) => n !== "default");
  const ours = packet(intruder, { key });
  const oursHeader = labelHeader("default");
  const cases = fc.oneof(
    // Sealed by a key holder of another cluster, its header rewritten to ours: a forgery.
    other.map((n) => {
      const theirs = packet(intruder, { key, cluster: n });
      const body = theirs.subarray(labelHeader(n).length);
      return { bytes: new Uint8Array([...oursHeader, ...body]), reason: "decrypt" as const };
    }),
    // Ours, relabelled to another cluster: dropped as that cluster's.
    other.map((n) => ({
      bytes: new Uint8Array([...labelHeader(n), ...ours.subarray(oursHeader.length)]),
      reason: "cluster" as const,
    })),
    // Ours with the header stripped, or its version changed.
    fc.constant({ bytes: ours.slice(oursHeader.length), reason: "malformed" as const }),
    fc.integer({ min: 0, max: 255 }).filter((v) => v !== WIRE_VERSION).map((v) => {
      const b = ours.slice();
      b[1] = v;
      return { bytes: b, reason: "version" as const };
    }),
  );
  const counted = { decrypt: 0, cluster: 0, malformed: 0, version: 0 };
  fc.assert(
    fc.property(cases, ({ bytes, reason }) => {
      const before = ml.stats.droppedPackets[reason];
      inject(bytes);
      counted[reason]++;
      return ml.stats.droppedPackets[reason] === before + 1 &&
        ml.stats.droppedPackets.internal === 0;
    }),
    { numRuns: 4000, seed: 17 },
  );
  for (const [k, n] of Object.entries(counted)) assert(n > 100, `${k}: ${n} cases`);
  assertEquals(ml.member("intruder"), undefined, "no relabelled packet got in");
  inject(ours); // the untouched packet does: the test is not vacuous
  assertEquals(ml.member("intruder")?.status, "alive");
});

Deno.test("fuzz: stream frames under another cluster's or version's header are answered with our header alone, nothing merged", async () => {
  const net = new SimNetwork({ seed: 23 });
  const t = net.createTransport();
  const ml = Memberlist.create(lanConfig({ nodeId: "victim", rng: net.rng }), t);
  const join = encode({
    type: "pushPull",
    join: true,
    from: "intruder",
    nodes: [{
      id: "intruder",
      addr: "10.6.6.6:7946",
      incarnation: 1,
      status: "alive",
      meta: new Uint8Array(),
    }],
  });
  const frames = fc.oneof(
    fc.string({ minLength: 1, maxLength: 60 }).filter((n) => n !== "default").map((n) => ({
      frame: packet(join, { cluster: n }),
      reason: "cluster" as const,
    })),
    fc.integer({ min: 0, max: 255 }).filter((v) => v !== WIRE_VERSION).map((v) => {
      const frame = packet(join);
      frame[1] = v;
      return { frame, reason: "version" as const };
    }),
  );
  await fc.assert(
    fc.asyncProperty(frames, async ({ frame, reason }) => {
      const sent: Uint8Array[] = [];
      const before = ml.stats.droppedPackets[reason];
      t.streamHandler!({
        remoteAddr: "10.9.9.9:7946",
        send: (f: Uint8Array) => void sent.push(f),
        receive: () => Promise.resolve(frame),
        close: () => {},
      });
      for (let i = 0; i < 8; i++) await null;
      return sent.length === 1 && String(sent[0]) === String(labelHeader("default")) &&
        ml.stats.droppedPackets[reason] === before + 1;
    }),
    { numRuns: 2000, seed: 29 },
  );
  assertEquals(ml.member("intruder"), undefined);
  await ml.shutdown();
});

Deno.test("a member at an address nothing can reach, or hosting layers backwards, is not taken in", () => {
  // One such packet (no key needed in a keyless cluster) made `nodes list`, RegisterWithCluster
  // and the TUI's update stream fail for as long as the member was remembered (10 minutes).
  const { ml, inject } = target(null);
  for (const addr of ["nonsense", "10.0.0.1:0", ":7946", "10.0.0.1:99999"]) {
    inject(
      packet(
        encode({ type: "alive", incarnation: 1, node: `e-${addr}`, addr, meta: new Uint8Array() }),
      ),
    );
  }
  assertEquals(ml.allMembers().map((m) => m.id), ["victim"]);
  assert(ml.stats.droppedPackets.malformed >= 4, JSON.stringify(ml.stats.droppedPackets));
  // Hosting [5, 1): refused by the decoder as encodeMetadata refuses it.
  const bytes = encodeMetadata({ ...meta, hosted: { model: "m", from: 1, to: 5 } });
  const i = bytes.findIndex((_, k) =>
    bytes[k] === 0 && bytes[k + 1] === 1 && bytes[k + 2] === 0 && bytes[k + 3] === 5
  );
  assert(i > 0, "found the hosted range's bytes");
  const backwards = bytes.slice();
  backwards.set([0, 5, 0, 1], i);
  assertThrows(() => decodeMetadata(backwards), DecodeError, "run backwards");
});
