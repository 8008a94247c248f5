// Network namespaces: five hosts on a bridge with 20% loss and 50 ± 20 ms delay. No member may
// be declared dead while all are up; a 2|3 partition is noticed by both sides and, once healed,
// the cluster is whole again. Needs root and `ip netns`; skipped with a printed reason otherwise.
// Loss and delay come from `tc netem` when the kernel has sch_netem; else loss comes from an
// nftables `numgen random` drop (kernel loss, TCP included) when `nft` runs, and delay from the
// members' userspace impairment (ImpairedTransport); else both are userspace — the test prints
// which. Userspace loss spares TCP, so the TCP fallback probe hides every UDP loss: 0 suspicions
// in 30 s where kernel loss gives ~3 suspect events a second across the five (still no death).
// Soak length: DLLM_NETNS_SECONDS (default 30; the full run is 120).
import { assert, assertEquals } from "../../support/assert.ts";
import { NodeProc, until } from "./procs.ts";

async function sh(cmd: string[], check = true): Promise<{ ok: boolean; out: string }> {
  const r = await new Deno.Command(cmd[0], { args: cmd.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  const out = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  if (check && !r.success) throw new Error(`${cmd.join(" ")} failed: ${out}`);
  return { ok: r.success, out };
}

interface Env {
  skip: string | null;
  netem: boolean;
  netemWhy: string;
  nft?: boolean;
}

async function probe(): Promise<Env> {
  if (Deno.build.os !== "linux") return { skip: "not Linux", netem: false, netemWhy: "" };
  if (Deno.uid?.() !== 0) {
    return { skip: "not root (network namespaces need CAP_NET_ADMIN)", netem: false, netemWhy: "" };
  }
  const ns = `dgprobe${Deno.pid}`;
  try {
    const add = await sh(["ip", "netns", "add", ns], false);
    if (!add.ok) {
      return { skip: `ip netns unavailable: ${add.out.trim()}`, netem: false, netemWhy: "" };
    }
    const q = await sh([
      "ip",
      "netns",
      "exec",
      ns,
      "tc",
      "qdisc",
      "add",
      "dev",
      "lo",
      "root",
      "netem",
      "delay",
      "1ms",
    ], false);
    const nft = !q.ok &&
      (await sh(["ip", "netns", "exec", ns, "nft", "add", "table", "ip", "t"], false).catch(() => ({
        ok: false,
      }))).ok;
    return { skip: null, netem: q.ok, netemWhy: q.ok ? "" : q.out.trim(), nft };
  } catch (e) {
    return { skip: `ip/tc not runnable: ${(e as Error).message}`, netem: false, netemWhy: "" };
  } finally {
    await sh(["ip", "netns", "del", ns], false);
  }
}

const env = await probe();
const SOAK_S = Number(Deno.env.get("DLLM_NETNS_SECONDS") ?? 30);
if (env.skip) console.log(`netns test skipped: ${env.skip}`);
else if (!env.netem) {
  console.log(
    `netns test: tc netem unavailable (${env.netemWhy}); ${
      env.nft ? "nftables loss, userspace delay" : "userspace loss/delay"
    } in each member`,
  );
}

Deno.test({
  name:
    `netns: 5 hosts, 20% loss, 50±20 ms, ${SOAK_S} s soak → no false death; 2|3 partition → noticed → healed`,
  ignore: env.skip !== null,
  fn: async () => {
    const tag = `dg${Deno.pid % 100000}`;
    const sw = `${tag}sw`;
    const hosts = [1, 2, 3, 4, 5].map((i) => ({
      ns: `${tag}h${i}`,
      ip: `10.77.0.${i}`,
      veth: `${tag}v${i}`,
    }));
    const procs: NodeProc[] = [];
    try {
      await sh(["ip", "netns", "add", sw]);
      await sh(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"]);
      await sh(["ip", "-n", sw, "link", "add", "br1", "type", "bridge"]);
      await sh(["ip", "-n", sw, "link", "set", "br0", "up"]);
      await sh(["ip", "-n", sw, "link", "set", "br1", "up"]);
      for (const h of hosts) {
        await sh(["ip", "netns", "add", h.ns]);
        await sh([
          "ip",
          "link",
          "add",
          h.veth,
          "netns",
          sw,
          "type",
          "veth",
          "peer",
          "name",
          "eth0",
          "netns",
          h.ns,
        ]);
        await sh(["ip", "-n", sw, "link", "set", h.veth, "master", "br0", "up"]);
        await sh(["ip", "-n", h.ns, "addr", "add", `${h.ip}/24`, "dev", "eth0"]);
        await sh(["ip", "-n", h.ns, "link", "set", "eth0", "up"]);
        await sh(["ip", "-n", h.ns, "link", "set", "lo", "up"]);
        if (env.netem) {
          await sh([
            "ip",
            "netns",
            "exec",
            h.ns,
            "tc",
            "qdisc",
            "add",
            "dev",
            "eth0",
            "root",
            "netem",
            "loss",
            "20%",
            "delay",
            "50ms",
            "20ms",
          ]);
        } else if (env.nft) {
          const nft = ["ip", "netns", "exec", h.ns, "nft"];
          await sh([...nft, "add", "table", "ip", "loss"]);
          await sh([...nft, "add chain ip loss out { type filter hook output priority 0; }"]);
          await sh([...nft, "add rule ip loss out oifname eth0 numgen random mod 100 < 20 drop"]);
        }
      }
      const impair = env.netem ? [] : [
        ...(env.nft ? [] : ["--impair-loss", "0.2"]),
        "--impair-delay",
        "50",
        "--impair-jitter",
        "20",
      ];
      for (const [i, h] of hosts.entries()) {
        const seeds = i === 0 ? [] : ["--seeds", `${hosts[0].ip}:7946`];
        procs.push(
          new NodeProc(`h${i + 1}`, [
            "--bind",
            h.ip,
            "--port",
            "7946",
            "--preset",
            "lan",
            ...seeds,
            ...impair,
          ], ["ip", "netns", "exec", h.ns]),
        );
      }
      const ids = procs.map((p) => p.id);
      const sees = (p: NodeProc, id: string) =>
        p.statusOf(id) === "alive" || p.statusOf(id) === "suspect";
      const formed = await until(
        () => procs.every((p) => ids.every((id) => id === p.id || sees(p, id))),
        60_000,
        "5 namespaced members to see each other",
      );

      // soak: everything up, lossy and slow: nobody may be declared dead
      await new Promise((r) => setTimeout(r, SOAK_S * 1000));
      const falseDeaths = procs.flatMap((p) =>
        p.events.filter((e) => e.event === "dead").map((e) => `${p.id}→${e.member.id}`)
      );
      const suspicions = procs.reduce(
        (a, p) => a + p.events.filter((e) => e.event === "suspect").length,
        0,
      );
      assertEquals(falseDeaths, [], "false deaths during the soak");

      // partition {h1,h2} | {h3,h4,h5}
      for (const h of hosts.slice(2)) {
        await sh(["ip", "-n", sw, "link", "set", h.veth, "master", "br1"]);
      }
      const left = procs.slice(0, 2), right = procs.slice(2);
      const split = await until(
        () =>
          left.every((p) => right.every((q) => p.statusOf(q.id) === "dead")) &&
          right.every((p) => left.every((q) => p.statusOf(q.id) === "dead")),
        60_000,
        "both sides to declare the other dead",
      );
      // heal
      for (const h of hosts.slice(2)) {
        await sh(["ip", "-n", sw, "link", "set", h.veth, "master", "br0"]);
      }
      const healed = await until(
        () => procs.every((p) => ids.every((id) => id === p.id || p.statusOf(id) === "alive")),
        90_000,
        "the cluster to be whole again",
      );
      console.log(JSON.stringify({
        netns: {
          impairment: env.netem
            ? "tc netem"
            : env.nft
            ? "nftables loss, userspace delay"
            : "userspace (no sch_netem)",
          formed_ms: Math.round(formed),
          soak_s: SOAK_S,
          suspicions,
          false_deaths: falseDeaths.length,
          partition_detected_ms: Math.round(split),
          healed_ms: Math.round(healed),
        },
      }));
      assert(healed > 0);
    } finally {
      await Promise.all(procs.map((p) => p.kill()));
      for (const h of hosts) await sh(["ip", "netns", "del", h.ns], false);
      await sh(["ip", "netns", "del", sw], false);
    }
  },
});
