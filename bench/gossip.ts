/**
 * Gossip benchmark on the deterministic simulated network (LAN preset, AES-256-GCM on, ~100-byte
 * realistic metadata per member). Prints one JSON object per cluster size:
 *
 * - `cluster_formation_ms`: all members joining one seed, one after another, until all see all
 * - `join_ms`: one new member joining a formed cluster until every member knows it
 * - `detect_ms` p50/p99: kill -9 a member until *every* other member has declared it dead
 * - `false_deaths` / `suspicions` under 10% loss for `loss_s` simulated seconds
 * - `backlog_drained_ms`: after the join, until no member has broadcasts queued
 * - `bytes_per_s_per_node`: steady state (after the backlog), over one full (size-scaled)
 *   push-pull period
 *
 * Usage: `deno run -A bench/gossip.ts --nodes 100,1000 [--trials 20] [--loss-seconds 120] [--seed 1]`
 *
 * @module
 */
import {
  type Config,
  emptyMetadata,
  Keyring,
  lanConfig,
  Memberlist,
  type NodeMetadata,
  pushPullScale,
  SimNetwork,
} from "../cluster/gossip/mod.ts";

function arg(name: string, def: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < Deno.args.length ? Deno.args[i + 1] : def;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

function meta(i: number): NodeMetadata {
  return {
    ...emptyMetadata(`node-${String(i).padStart(4, "0")}`),
    addresses: [`10.0.${(i >> 8) & 255}.${i & 255}`],
    rpcPort: 7950,
    metricsPort: 9090,
    resources: {
      memoryBytes: 25_769_803_776,
      cores: 16,
      backend: "webgpu",
      adapter: "NVIDIA GeForce RTX 4090",
    },
    hosted: { model: "llama-3.1-8b-instruct-q4_k_m", from: (i % 4) * 8, to: (i % 4) * 8 + 8 },
    version: "0.1.0",
  };
}

async function run(n: number, trials: number, lossSeconds: number, seed: number) {
  const wall0 = performance.now();
  const progress = (what: string) =>
    console.error(
      `[gossip bench n=${n}] ${what} (wall ${((performance.now() - wall0) / 1000).toFixed(1)} s)`,
    );
  const net = new SimNetwork({ seed });
  const key = new Uint8Array(32).fill(42);
  const cfg = (i: number): Config =>
    lanConfig({ nodeId: meta(i).id, metadata: meta(i), rng: net.rng, keyring: new Keyring(key) });
  const members: Memberlist[] = [];
  for (let i = 0; i < n; i++) members.push(Memberlist.create(cfg(i), net.createTransport()));
  const f0 = net.now();
  for (let i = 1; i < n; i++) await net.settle(members[i].join([members[0].transport.addr]));
  const formed = await net.runUntil(() => members.every((m) => m.numMembers() === n), 300_000, 100);
  const formation = formed === null ? null : net.now() - f0;
  progress(`formed in ${formation} simulated ms`);
  await net.run(30_000);

  // one join into the formed cluster
  const joiner = Memberlist.create(cfg(n), net.createTransport());
  const j0 = net.now();
  await net.settle(joiner.join([members[n >> 1].transport.addr]));
  await net.runUntil(
    () => members.every((m) => m.member(meta(n).id)?.status === "alive"),
    30_000,
    5,
  );
  const joinMs = net.now() - j0;
  members.push(joiner);

  // steady state bandwidth over one push-pull period (sized for the cluster), measured once the
  // broadcast backlog of formation (every joiner re-gossips what it learned) has drained
  const d0 = net.now();
  const drained = await net.runUntil(
    () => members.every((m) => m.queuedBroadcasts() === 0),
    600_000,
    1000,
  );
  const drainMs = drained === null ? null : net.now() - d0;
  await net.run(10_000);
  const window = pushPullScale(members[0].config.pushPullInterval, members.length);
  const b0 = net.bytesSent(), t0 = net.now();
  await net.run(window);
  const b1 = net.bytesSent(), secs = (net.now() - t0) / 1000;
  const udp = (b1.udp - b0.udp) / members.length / secs,
    tcp = (b1.tcp - b0.tcp) / members.length / secs;

  progress("steady-state window done");
  // false positives under 10% loss
  let deaths = 0, suspicions = 0;
  const offs = members.flatMap((
    m,
  ) => [m.on("dead", () => deaths++), m.on("suspect", () => suspicions++)]);
  net.setDefaultLink({ loss: 0.1 });
  await net.run(lossSeconds * 1000);
  net.setDefaultLink({ loss: 0 });
  offs.forEach((off) => off());
  await net.run(5000);

  progress("loss run done");
  // detection: kill one member at a time; time until every live member has it dead
  const times: number[] = [];
  const alive = new Set(members.map((_, i) => i));
  for (let t = 0; t < trials; t++) {
    const v = 1 + Math.floor(net.rng.next() * (members.length - 1));
    if (!alive.has(v)) {
      t--;
      continue;
    }
    alive.delete(v);
    const id = members[v].localNode.id;
    net.crash(members[v].transport.addr);
    const d = await net.runUntil(
      () => [...alive].every((i) => members[i].member(id)?.status === "dead"),
      60_000,
      10,
    );
    times.push(d ?? Infinity);
    await net.run(3000 + net.rng.next() * 2000);
  }
  return {
    nodes: n,
    preset: "lan",
    encrypted: true,
    metadata_bytes: members[0].localNode.metaBytes.length,
    cluster_formation_ms: formation,
    backlog_drained_ms: drainMs,
    join_ms: joinMs,
    detect_ms: {
      p50: pct(times, 50),
      p99: pct(times, 99),
      max: Math.max(...times),
      trials: times.length,
    },
    loss_10pct: { simulated_s: lossSeconds, suspicions, false_deaths: deaths },
    bytes_per_s_per_node: {
      total: Math.round(udp + tcp),
      udp: Math.round(udp),
      tcp: Math.round(tcp),
      window_s: secs,
    },
    simulated_s: Math.round(net.now() / 1000),
    wall_s: Math.round((performance.now() - wall0) / 100) / 10,
  };
}

const USAGE =
  "usage: deno run -A bench/gossip.ts [--nodes 100,1000] [--trials 20] [--loss-seconds 120] " +
  "[--seed 1]\n  the simulated-network gossip benchmark; one JSON object per cluster size";

if (import.meta.main && (Deno.args.includes("--help") || Deno.args.includes("-h"))) {
  console.log(USAGE);
} else if (import.meta.main) {
  const sizes = arg("nodes", "100,1000").split(",").map(Number).filter((x) => x > 1);
  const lossSeconds = Number(arg("loss-seconds", "120"));
  const seed = Number(arg("seed", "1"));
  for (const n of sizes) {
    const trials = Number(arg("trials", n <= 300 ? "20" : "10"));
    console.log(JSON.stringify(await run(n, trials, lossSeconds, seed)));
  }
}
