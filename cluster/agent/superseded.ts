/**
 * An agent whose node id another process took over while it was away (frozen, or cut off past
 * its death; a restart of it elsewhere took the id once it was reclaimable). When it comes back,
 * the cluster lists the id at the new holder's address, and gossip's news of it reaches the old
 * process only as a conflict about its own id. Nothing listened: the old process went on hosting
 * layers and answering requests as the id's holder, a zombie every other member had replaced.
 *
 * One conflict is not enough: just after a restart, copies of the previous process's own
 * announcements (its old address) still circulate; and anyone can replay a recorded one, sealed
 * or not (one replayed packet made a healthy agent exit). The same other address heard again
 * after `confirmMs` is asked, with a ping for our id at a fresh sequence number, whether it holds
 * the id; only when it answers does this process stand aside and stop, as an agent refused at
 * join gives up.
 *
 * @module
 */
import type { Memberlist } from "../gossip/mod.ts";

/**
 * Call `onSuperseded(why)` once when gossip keeps reporting this agent's id (`nodeId`) held at
 * another address for at least `confirmMs`. Returns a function that stops watching.
 */
export function watchSuperseded(
  gossip: Pick<Memberlist, "on" | "answersAsUs">,
  nodeId: string,
  onSuperseded: (why: string) => void,
  confirmMs = 5_000,
  now: () => number = Date.now,
): () => void {
  const firstHeard = new Map<string, number>();
  let told = false;
  let stopped = false;
  /** An address being asked (one question at a time: a flood of claims asks nothing more). */
  let asking = false;
  const ask = async (addr: string) => {
    asking = true;
    const holds = await gossip.answersAsUs(addr).catch(() => false);
    asking = false;
    if (stopped || told) return;
    if (!holds) {
      // No process there takes itself for us: a stale or forged claim. Heard again, it is
      // asked again, no sooner than `confirmMs` from now.
      firstHeard.set(addr, now());
      return;
    }
    told = true;
    onSuperseded(
      `node id "${nodeId}" is now held by a live member at ${addr} (this agent was away, and ` +
        `a restart of it, or another agent with its id, took the id over): this agent stands ` +
        `aside and stops; give each agent its own --node-id`,
    );
  };
  const off = gossip.on("conflict", (e) => {
    if (told || asking || e.member.id !== nodeId) return;
    const addr = e.member.addr;
    const first = firstHeard.get(addr);
    if (first === undefined) {
      // Bounded: a flood of forged addresses keeps at most the latest few.
      if (firstHeard.size >= 16) firstHeard.clear();
      firstHeard.set(addr, now());
      return;
    }
    if (now() - first < confirmMs) return;
    // (ask catches the question's failures; onSuperseded is the agent's own give-up)
    void ask(addr);
  });
  return () => {
    stopped = true;
    off();
  };
}
