// The broadcast queue: fewest-transmits-first, newest-first among equals, invalidation by key,
// the retransmit limit, and the byte budget.
import { assert, assertEquals } from "../../support/assert.ts";
import { TransmitLimitedQueue } from "../../../cluster/gossip/queue.ts";
import { retransmitLimit } from "../../../cluster/gossip/mod.ts";

const msg = (s: string) => new TextEncoder().encode(s);
const txt = (bs: Uint8Array[]) => bs.map((b) => new TextDecoder().decode(b));

Deno.test("queue: retransmit limit = mult × ceil(log10(N+1))", () => {
  assertEquals(retransmitLimit(4, 1), 4);
  assertEquals(retransmitLimit(4, 9), 4);
  assertEquals(retransmitLimit(4, 10), 8);
  assertEquals(retransmitLimit(4, 100), 12);
  assertEquals(retransmitLimit(4, 1000), 16);
});

Deno.test("queue: fresh broadcasts first, newest first among equals", () => {
  const q = new TransmitLimitedQueue(2, () => 5); // limit 2
  q.queue({ key: "a", msg: msg("a1") });
  q.queue({ key: "b", msg: msg("b1") });
  assertEquals(txt(q.getBroadcasts(0, 2)), ["b1"]); // only room for one: the newest
  q.queue({ key: "c", msg: msg("c1") });
  // a1 and c1 have 0 transmits (c1 newer), b1 has 1
  assertEquals(txt(q.getBroadcasts(0, 100)), ["c1", "a1", "b1"]);
  // b1 reached its limit of 2 and is gone; a1, c1 have 1 transmit each
  assertEquals(q.length, 2);
  assertEquals(txt(q.getBroadcasts(0, 100)), ["c1", "a1"]);
  assertEquals(q.length, 0);
});

Deno.test("queue: a newer broadcast about the same member invalidates the older one", () => {
  const q = new TransmitLimitedQueue(4, () => 100);
  const finished: string[] = [];
  q.queue({ key: "n1", msg: msg("suspect n1 inc 3"), finished: () => finished.push("old") });
  q.queue({ key: "n2", msg: msg("alive n2") });
  q.queue({ key: "n1", msg: msg("alive n1 inc 4") });
  assertEquals(finished, ["old"]);
  assertEquals(q.length, 2);
  assertEquals(txt(q.getBroadcasts(0, 1000)), ["alive n1 inc 4", "alive n2"]);
  // un-keyed broadcasts never invalidate each other
  q.queue({ key: null, msg: msg("u1") });
  q.queue({ key: null, msg: msg("u2") });
  assertEquals(q.length, 4);
});

Deno.test("queue: byte budget and per-part overhead are respected; oversized items wait", () => {
  const q = new TransmitLimitedQueue(4, () => 10);
  q.queue({ key: "big", msg: new Uint8Array(900) });
  q.queue({ key: "s1", msg: new Uint8Array(100) });
  q.queue({ key: "s2", msg: new Uint8Array(100) });
  const got = q.getBroadcasts(2, 250);
  assertEquals(got.map((b) => b.length), [100, 100]);
  const got2 = q.getBroadcasts(2, 1000);
  // the big one has fewer transmits, so it goes first; then no room is left for the others
  assertEquals(got2.map((b) => b.length), [900]);
  const total = got2.reduce((a, b) => a + b.length + 2, 0);
  assert(total <= 1000, `over budget: ${total}`);
});

Deno.test("queue: finished fires once the retransmit limit is reached", () => {
  const q = new TransmitLimitedQueue(1, () => 1); // limit 1
  let done = 0;
  q.queue({ key: "x", msg: msg("x"), finished: () => done++ });
  q.getBroadcasts(0, 100);
  assertEquals(done, 1);
  assertEquals(q.length, 0);
});
