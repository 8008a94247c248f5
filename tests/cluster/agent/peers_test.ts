/** Peers: the signal that ends streams to a member gossip declared gone. */
import { Peers } from "../../../cluster/agent/peers.ts";
import { resolveConfig } from "../../../cluster/agent_config.ts";
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
