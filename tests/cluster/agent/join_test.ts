/** Joining in the background: an id still held by a member's previous life is retried. */
import { joinInBackground } from "../../../cluster/agent/lifecycle.ts";
import type { AgentState } from "../../../cluster/agent/state.ts";
import { assertEquals } from "../../support/assert.ts";

Deno.test("a join refused for a duplicate id is retried, not given up", async () => {
  let calls = 0;
  const logs: string[] = [];
  let joined!: () => void;
  const done = new Promise<void>((r) => joined = r);
  const s = {
    stopped: false,
    config: { seeds: ["10.0.0.1:7946"] },
    log: (level: string, msg: string) => logs.push(`${level} ${msg}`),
    gossip: {
      transport: { addr: "10.0.0.2:7946" },
      numMembers: () => 3,
      join: () => {
        calls++;
        if (calls < 3) {
          // A restarted pod's node id, its old self not yet declared dead.
          const e = new Error(`node id "n4" is already used by a live member at 10.0.0.5:7946`);
          e.name = "DuplicateNodeIdError";
          return Promise.reject(e);
        }
        joined();
        return Promise.resolve(1);
      },
    },
  } as unknown as AgentState;
  joinInBackground(s, 20);
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    done,
    new Promise((_, reject) => timer = setTimeout(() => reject(new Error("never retried")), 5000)),
  ]).finally(() => clearTimeout(timer));
  // Before, the first refusal was logged and the agent stayed outside the cluster for good.
  assertEquals(calls, 3);
  assertEquals(logs.filter((l) => l.startsWith("error")).length, 2);
});
