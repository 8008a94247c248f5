/**
 * Run one gossip member and print its events as JSON lines on stdout; read JSON commands on
 * stdin. Used by the real-socket and network-namespace tests, and handy for poking a cluster:
 *
 * ```sh
 * deno run -A tests/cluster/gossip/cli_node.ts --id a --port 7946
 * deno run -A tests/cluster/gossip/cli_node.ts --id b --port 7947 --seeds 127.0.0.1:7946
 * ```
 *
 * Flags: --id --bind --port --advertise --seeds --preset lan|wan|local --keys b64,b64
 * --impair-loss --impair-delay --impair-jitter --multicast --cluster.
 * Commands: {"cmd":"members"} {"cmd":"stats"} {"cmd":"meta","meta":{…}} {"cmd":"leave"}
 * {"cmd":"key-add"|"key-use"|"key-remove","key":"b64"}.
 *
 * @module
 */
import {
  emptyMetadata,
  ImpairedTransport,
  Keyring,
  lanConfig,
  localConfig,
  type Member,
  Memberlist,
  MulticastDiscovery,
  type NodeMetadata,
  type Transport,
  UdpTransport,
  wanConfig,
} from "../../../cluster/gossip/mod.ts";

function flags(args: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith("--")) continue;
    const eq = a.indexOf("=");
    if (eq > 0) m.set(a.slice(2, eq), a.slice(eq + 1));
    else if (i + 1 < args.length && !args[i + 1].startsWith("--")) m.set(a.slice(2), args[++i]);
    else m.set(a.slice(2), "true");
  }
  return m;
}

function out(obj: Record<string, unknown>) {
  console.log(JSON.stringify(obj));
}

function memberJson(m: Member) {
  return { id: m.id, addr: m.addr, status: m.status, incarnation: m.incarnation, meta: m.meta };
}

if (import.meta.main) {
  const f = flags(Deno.args);
  const id = f.get("id") ?? Deno.env.get("DLLM_NODE_ID");
  if (!id) {
    console.error("--id is required (a unique node id)");
    Deno.exit(64);
  }
  const keys = (f.get("keys") ?? "").split(",").filter(Boolean).map(Keyring.parseKey);
  const keyring = keys.length ? new Keyring(keys[0], keys.slice(1)) : null;
  const preset = { lan: lanConfig, wan: wanConfig, local: localConfig }[f.get("preset") ?? "local"];
  if (!preset) {
    console.error(`--preset must be lan, wan or local`);
    Deno.exit(64);
  }
  const meta: NodeMetadata = { ...emptyMetadata(id), version: "0.1.0" };
  const cfg = preset({ nodeId: id, keyring, metadata: meta });
  let transport: Transport = await UdpTransport.listen({
    bindAddr: f.get("bind") ?? "127.0.0.1",
    port: Number(f.get("port") ?? 0),
    advertiseAddr: f.get("advertise"),
  });
  const loss = Number(f.get("impair-loss") ?? 0), delay = Number(f.get("impair-delay") ?? 0);
  if (loss > 0 || delay > 0) {
    transport = new ImpairedTransport(transport, {
      loss,
      delayMs: delay,
      jitterMs: Number(f.get("impair-jitter") ?? 0),
    });
  }
  const ml = Memberlist.create(cfg, transport);
  const t0 = performance.now();
  for (const type of ["join", "update", "suspect", "alive", "dead", "leave", "conflict"] as const) {
    ml.on(
      type,
      (e) =>
        out({ event: type, t: Math.round(performance.now() - t0), member: memberJson(e.member) }),
    );
  }
  out({ event: "ready", id, addr: transport.addr });
  const seeds = (f.get("seeds") ?? "").split(",").filter(Boolean);
  if (seeds.length) {
    // Retry for up to ~30 s: the seed may still be starting (slow under a loaded CI machine).
    for (let attempt = 0;; attempt++) {
      try {
        const n = await ml.join(seeds);
        out({ event: "joined", seeds: n });
        break;
      } catch (e) {
        const err = e as Error;
        if (err.name === "DuplicateNodeIdError" || attempt >= 60) {
          out({ event: "error", name: err.name, error: err.message });
          await ml.shutdown();
          Deno.exit(2);
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }
  if (f.get("multicast") === "true") {
    await MulticastDiscovery.start(ml, { cluster: f.get("cluster") ?? "default", intervalMs: 500 });
  }
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
  let buf = "";
  for await (const chunk of lines) {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line) continue;
      try {
        const c = JSON.parse(line);
        if (c.cmd === "members") out({ event: "members", members: ml.members().map(memberJson) });
        else if (c.cmd === "stats") {
          out({ event: "stats", stats: ml.stats, health: ml.healthScore });
        } else if (c.cmd === "meta") {
          ml.updateMetadata({ ...emptyMetadata(id), ...c.meta, id });
          out({ event: "meta-updated" });
        } else if (c.cmd === "key-add") keyring?.addKey(Keyring.parseKey(c.key));
        else if (c.cmd === "key-use") keyring?.useKey(Keyring.parseKey(c.key));
        else if (c.cmd === "key-remove") keyring?.removeKey(Keyring.parseKey(c.key));
        else if (c.cmd === "leave") {
          await ml.leave(2000);
          await ml.shutdown();
          out({ event: "left" });
          Deno.exit(0);
        }
        if (String(c.cmd).startsWith("key-")) out({ event: "key-ok", cmd: c.cmd });
      } catch (e) {
        out({ event: "error", error: (e as Error).message });
      }
    }
  }
  // stdin closed: keep running until killed
  await new Promise(() => {});
}
