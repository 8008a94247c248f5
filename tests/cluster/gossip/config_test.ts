// Presets differ where they should, every field can be overridden, push-pull scales with size.
import { assert, assertEquals } from "../../support/assert.ts";
import { lanConfig, localConfig, pushPullScale, wanConfig } from "../../../cluster/gossip/mod.ts";

Deno.test("config: presets order their timings local < lan < wan, overrides win", () => {
  const local = localConfig({ nodeId: "a" }),
    lan = lanConfig({ nodeId: "a" }),
    wan = wanConfig({ nodeId: "a" });
  assert(local.probeInterval < lan.probeInterval && lan.probeInterval < wan.probeInterval);
  assert(local.gossipInterval < lan.gossipInterval && lan.gossipInterval < wan.gossipInterval);
  assert(lan.tcpTimeout < wan.tcpTimeout);
  assertEquals(lan.maxPacketSize, 1400);
  assertEquals(lan.keyring, null);
  const o = wanConfig({ nodeId: "x", probeInterval: 1234, gossipNodes: 9 });
  assertEquals([o.nodeId, o.probeInterval, o.gossipNodes], ["x", 1234, 9]);
  for (const c of [local, lan, wan]) {
    assert(c.probeTimeout < c.probeInterval, "timeout must fit in the interval");
  }
});

Deno.test("config: push-pull interval grows by one multiple per doubling above 32 members", () => {
  assertEquals(pushPullScale(30_000, 10), 30_000);
  assertEquals(pushPullScale(30_000, 32), 30_000);
  assertEquals(pushPullScale(30_000, 33), 60_000);
  assertEquals(pushPullScale(30_000, 64), 60_000);
  assertEquals(pushPullScale(30_000, 100), 90_000);
  assertEquals(pushPullScale(30_000, 1000), 180_000);
});
