/**
 * `--discover` in the agent (lifecycle's startDiscovery): where the network has no multicast the
 * agent warns and goes on; where it has, two agents without seeds find each other and join.
 */
import { startDiscovery } from "../../../cluster/agent/lifecycle.ts";
import type { AgentState } from "../../../cluster/agent/state.ts";
import { localConfig, Memberlist } from "../../../cluster/gossip/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { loopbackMulticastWorks } from "../../support/multicast.ts";

/** The parts of an agent startDiscovery reads, around a real gossip member on loopback. */
async function fakeAgent(id: string, bind: string) {
  const logs: string[] = [];
  const gossip = await Memberlist.listen(localConfig({ nodeId: id, clusterName: "lab" }), {
    port: 0,
  });
  const s = {
    stopped: false,
    draining: false,
    config: { bind, clusterName: "lab", discover: true },
    gossip,
    log: (level: string, msg: string, f?: Record<string, unknown>) =>
      logs.push(`${level} ${msg} ${JSON.stringify(f ?? {})}`),
  } as unknown as AgentState;
  return { s, logs, gossip };
}

Deno.test("--discover where multicast cannot be joined: a warning naming the cause, no crash", async () => {
  // An interface address this machine does not have (TEST-NET-3): joining the group on it fails.
  const { s, logs, gossip } = await fakeAgent("a", "203.0.113.77");
  try {
    const d = await startDiscovery(s, { port: 20000 + Math.floor(Math.random() * 20000) });
    assertEquals(d, undefined);
    assertEquals(s.discovery, undefined);
    const warn = logs.find((l) => l.startsWith("warn multicast discovery is unavailable"));
    assert(warn?.includes("join with --seeds") && warn.includes("cannot join group"), logs.join());
  } finally {
    await gossip.shutdown();
  }
});

Deno.test({
  name: "--discover: two agents without seeds join each other, and stop announcing once they leave",
  ignore: !(await loopbackMulticastWorks("239.255.79.49")),
  fn: async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const agents = [await fakeAgent("a", "127.0.0.1"), await fakeAgent("b", "127.0.0.1")];
    try {
      for (const a of agents) {
        assert(await startDiscovery(a.s, { port, intervalMs: 100 }), a.logs.join());
        assert(a.logs.some((l) => l.startsWith("info multicast discovery started")));
      }
      const t0 = Date.now();
      while (Date.now() - t0 < 5000 && agents.some((a) => a.gossip.numMembers() !== 2)) {
        await new Promise((r) => setTimeout(r, 25));
      }
      assert(agents.every((a) => a.gossip.numMembers() === 2), agents.map((a) => a.logs).join());
      // b leaves: its discovery stops with it (nothing it hears joins it back), and a sees it go.
      await agents[1].gossip.leave(500);
      await new Promise((r) => setTimeout(r, 500));
      assertEquals(agents[0].gossip.member("b")?.status, "left");
      assertEquals(agents[1].gossip.running, false);
    } finally {
      for (const a of agents) {
        a.s.discovery?.stop();
        await a.gossip.shutdown();
      }
    }
  },
});
