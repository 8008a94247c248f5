/** Peers: the signal that ends streams to a member gossip declared gone. */
import { dataEndpoint, httpEndpoint, Peers, rpcEndpoint } from "../../../cluster/agent/peers.ts";
import { resolveConfig } from "../../../cluster/agent_config.ts";
import type { Member } from "../../../cluster/gossip/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

Deno.test("Peers.lostSignal aborts when the member is dropped, and a rejoined member gets a new one", () => {
  const peers = new Peers(resolveConfig([["default", { memoryBudget: "1GB" }]]));
  const first = peers.lostSignal("b");
  assertEquals(peers.lostSignal("b"), first, "one signal per member");
  const other = peers.lostSignal("c");
  peers.drop("b");
  assert(first.aborted);
  assert((first.reason as Error).message.includes("gossip declared b dead or gone"));
  assert(!other.aborted, "only the dropped member's streams end");
  // Gossip still lists a dead member for a while: a stream opened to it then fails at once.
  assert(peers.lostSignal("b").aborted, "a link made after the death gets the aborted signal");
  peers.drop("never-seen");
  assert(peers.lostSignal("never-seen").aborted, "a death heard before any stream counts too");
  peers.rejoined("b");
  const rejoined = peers.lostSignal("b");
  assert(!rejoined.aborted, "a member back under the same id (a join) is watched anew");
  peers.closeAll();
  assert(other.aborted && rejoined.aborted, "shutdown ends every stream");
});

Deno.test("Peers.transportTo: callers racing for a new member share one transport", async () => {
  const peers = new Peers(resolveConfig([["default", { memoryBudget: "1GB" }]]));
  const member = {
    id: "b",
    addr: "127.0.0.1:7946",
    meta: { addresses: ["127.0.0.1"], rpcPort: 1 },
  } as unknown as Member;
  const [x, y] = await Promise.all([peers.transportTo(member), peers.transportTo(member)]);
  assert(x === y, "one transport, not one per caller (all but the last were never closed)");
  assert(await peers.transportTo(member) === x, "and it is kept");
  const moved = { ...member, meta: { ...member.meta!, rpcPort: 2 } } as Member;
  assert(await peers.transportTo(moved) !== x, "a member that moved gets a new one");
  peers.closeAll();
});

Deno.test("Peers.tlsVerdict: a refused member's streams end; trusted again, it is watched anew", () => {
  const peers = new Peers(resolveConfig([["default", { memoryBudget: "1GB" }]]));
  const untrusted = new Map<string, string>();
  assertEquals(peers.tlsVerdict("b", undefined, untrusted), undefined, "trusted all along");
  const before = peers.lostSignal("b");
  assertEquals(peers.tlsVerdict("b", "unknown ca", untrusted), "refused");
  assert(before.aborted, "streams to a member our CA refuses end");
  assertEquals(untrusted.get("b"), "unknown ca");
  assertEquals(peers.tlsVerdict("b", "unknown ca", untrusted), undefined, "refused again: no news");
  assertEquals(peers.tlsVerdict("b", undefined, untrusted), "trusted");
  assert(!untrusted.has("b"));
  // Before, the signal stayed aborted: every stream to it failed at once as "dead or gone".
  assert(!peers.lostSignal("b").aborted, "a member trusted again gets streams again");
  peers.closeAll();
});

Deno.test("a member on IPv6 gets bracketed endpoints for its RPC port, data plane and HTTP API", () => {
  // Before: the RPC endpoint was "::1:7950", which no URL parser reads as host and port, so an
  // agent could not reach a peer that advertised an IPv6 address.
  const member = {
    id: "b",
    addr: "[::1]:7946",
    meta: { addresses: ["::1"], rpcPort: 7950, dataPort: 7951, httpPort: 8080 },
  } as unknown as Member;
  assertEquals(rpcEndpoint(member), "[::1]:7950");
  assertEquals(dataEndpoint(member), "[::1]:7951");
  assertEquals(httpEndpoint(member), "http://[::1]:8080");
  const gossipOnly = { ...member, meta: { ...member.meta!, addresses: [] } } as Member;
  assertEquals(rpcEndpoint(gossipOnly), "[::1]:7950", "from the gossip address alone too");
});
