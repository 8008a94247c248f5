/**
 * An agent whose node id another process took over while it was away (frozen, or cut off past
 * its death; a restart of it elsewhere took the id once it was reclaimable). When it comes back,
 * the cluster lists the id at the new holder's address, and gossip's news of it reaches the old
 * process only as a conflict about its own id. Nothing listened: the old process went on hosting
 * layers and answering requests as the id's holder, a zombie every other member had replaced.
 *
 * One conflict is not enough: just after a restart, copies of the previous process's own
 * announcements (its old address) still circulate. The same other address heard again after
 * `confirmMs` is a live holder, and this process stands aside and stops, as an agent refused
 * at join gives up.
 *
 * @module
 */
import type { Memberlist } from "../gossip/mod.ts";

/**
 * Call `onSuperseded(why)` once when gossip keeps reporting this agent's id (`nodeId`) held at
 * another address for at least `confirmMs`. Returns a function that stops watching.
 */
export function watchSuperseded(
  gossip: Pick<Memberlist, "on">,
  nodeId: string,
  onSuperseded: (why: string) => void,
  confirmMs = 5_000,
  now: () => number = Date.now,
): () => void {
  const firstHeard = new Map<string, number>();
  let told = false;
  return gossip.on("conflict", (e) => {
    if (told || e.member.id !== nodeId) return;
    const addr = e.member.addr;
    const first = firstHeard.get(addr);
    if (first === undefined) {
      // Bounded: a flood of forged addresses keeps at most the latest few.
      if (firstHeard.size >= 16) firstHeard.clear();
      firstHeard.set(addr, now());
      return;
    }
    if (now() - first < confirmMs) return;
    told = true;
    onSuperseded(
      `node id "${nodeId}" is now held by a live member at ${addr} (this agent was away, and ` +
        `a restart of it, or another agent with its id, took the id over): this agent stands ` +
        `aside and stops; give each agent its own --node-id`,
    );
  });
}
