import { SimNetwork } from "../../../cluster/gossip/sim.ts";
import { Memberlist } from "../../../cluster/gossip/memberlist.ts";
import { lanConfig } from "../../../cluster/gossip/config.ts";
const N = Number(Deno.args[0] ?? 5);
const net = new SimNetwork({ seed: 7 });
const ms: Memberlist[] = [];
const t0 = performance.now();
for (let i = 0; i < N; i++) {
  const t = net.createTransport();
  ms.push(Memberlist.create(lanConfig({ nodeId: `n${i}`, rng: net.rng }), t));
}
for (let i = 1; i < N; i++) { await net.settle(ms[i].join([ms[0].transport.addr])); }
const conv = await net.runUntil(() => ms.every((m) => m.numMembers() === N), 60000, 50);
console.log("converged", conv, "sim ms at", net.now(), "wall", performance.now() - t0);
const victim = ms[N - 1];
const deadAt = new Map<string, number>();
for (const m of ms.slice(0, N - 1)) m.on("dead", (e) => { if (e.member.id === victim.config.nodeId) deadAt.set(m.config.nodeId, net.now()); });
const k = net.now();
net.crash(victim.transport.addr);
const d = await net.runUntil(() => deadAt.size === N - 1, 60000, 50);
console.log("all dead after", d, "wall", performance.now() - t0);
const b0 = net.bytesSent(); const tb = net.now();
await net.run(60000);
const b1 = net.bytesSent();
console.log("bytes/s/node udp", (b1.udp - b0.udp) / (N - 1) / 60, "tcp", (b1.tcp - b0.tcp) / (N - 1) / 60, "wall", performance.now() - t0);
console.log(ms[0].stats);
