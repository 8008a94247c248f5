/**
 * Start-up and shutdown: the gossip member this agent is (metadata, keyring, cluster name,
 * timing preset), joining the seeds with retries (they may start after us) and whom LAN
 * multicast discovery finds, and the drain-then-leave order of a graceful stop.
 *
 * @module
 */
import type { Backend } from "../../kernels/backend.ts";
import { type AgentConfig, AgentConfigError } from "../agent_config.ts";
import {
  type Config as GossipConfig,
  type DiscoveryOptions,
  encodeMetadata,
  joinHostPort,
  Keyring,
  lanConfig,
  localConfig,
  Memberlist,
  MetadataError,
  MulticastDiscovery,
  multicastInterface,
  type NodeMetadata,
  splitHostPort,
  suspicionTimeout,
  wanConfig,
} from "../gossip/mod.ts";
import { VERSION } from "../version.ts";
import { cpuCores } from "../discovery/mod.ts";
import { replicaCountToWire } from "../placement/mod.ts";
import type { AgentLogger, AgentState } from "./state.ts";
import type { ServedModel } from "./served_model.ts";
import { offeredBudget } from "./kv_budget.ts";
import { SHUTDOWN, shuttingDown } from "./refusals.ts";

/** Listen for gossip as this agent: its metadata, keyring, cluster name and timing preset. */
export async function startGossip(
  cfg: AgentConfig,
  backend: Backend,
  reason: string,
  speed: number,
  model: ServedModel | undefined,
  log: AgentLogger,
): Promise<Memberlist> {
  const keyring = cfg.gossipKeys.length
    ? new Keyring(
      Keyring.parseKey(cfg.gossipKeys[0]),
      cfg.gossipKeys.slice(1).map((k) => Keyring.parseKey(k)),
    )
    : null;
  const preset = cfg.gossipPreset === "local"
    ? localConfig
    : cfg.gossipPreset === "wan"
    ? wanConfig
    : lanConfig;
  const nonce = lifeNonce();
  const meta: NodeMetadata = {
    id: cfg.nodeId,
    addresses: [cfg.advertiseAddress],
    rpcPort: cfg.rpcPort,
    metricsPort: cfg.metricsPort,
    httpPort: cfg.httpPort,
    resources: {
      // The prefix cache's bytes are spent outside placement: offer only the rest for layers.
      memoryBytes: offeredBudget(cfg),
      cores: navigator.hardwareConcurrency,
      backend: backend.name,
      // The device and why auto-selection chose it, so `llmctl nodes list` can show both.
      adapter: `${backend.device} — ${reason}`.slice(0, 240),
      speed,
      threads: cfg.threads ?? cpuCores(),
      memoryTotal: Deno.systemMemoryInfo().total,
    },
    model: model?.id.toString() ?? "",
    hosted: null,
    version: VERSION,
    // Every agent publishes the count it asks for; placement runs the fewest (agreedReplicaCount).
    replicas: replicaCountToWire(cfg.replicas),
    // Placement plans every stage's KV cache with the largest reservation any member announces,
    // so agents started with other --context-size or --max-sessions still make the same plan.
    kvReserve: { context: cfg.contextSize, sessions: Math.min(cfg.maxSessions, 0xffff) },
    life: `${nonce}.0`,
    ...(cfg.apiTlsCert ? { apiTls: true } : {}),
  };
  if (model) checkAnnouncementFits(meta, model.id.toString());
  // Declared dead (frozen, cut off) and back: a new life, so heads that saw this agent's stage
  // fail may try it again (NodeMetadata.life). After the refutation, not inside it.
  let comebacks = 0;
  const cameBack = () =>
    queueMicrotask(() => {
      const now = ml.localNode.meta;
      if (!now) return;
      comebacks++;
      log("warn", "gossip declared this agent dead; it refuted and is back", { comebacks });
      ml.updateMetadata({ ...now, life: `${nonce}.${comebacks}` });
    });
  const ml: Memberlist = await Memberlist.listen(
    preset({
      nodeId: cfg.nodeId,
      metadata: meta,
      keyring,
      // In every packet's header: members of other clusters drop ours, and we theirs.
      clusterName: cfg.clusterName,
      logger: (level, msg, fields) =>
        log(level === "debug" ? "debug" : level, `gossip: ${msg}`, fields),
      onDeathRefuted: cameBack,
    }),
    {
      bindAddr: cfg.bind,
      port: cfg.gossipPort,
      advertiseAddr: cfg.advertiseAddress,
      warn: (msg, fields) => log("warn", `gossip: ${msg}`, fields),
    },
  );
  return ml;
}

/** Eight random base-36 characters: one process's life among its id's restarts. */
function lifeNonce(): string {
  const b = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(b, (x) => (x % 36).toString(36)).join("");
}

/**
 * Throw an AgentConfigError naming the model when its id would not fit this agent's gossip
 * metadata once it announces a stage (the id appears twice then, and a record holds 512 bytes).
 * Checked before serving: the first announcement failed otherwise, and the stage with it.
 */
export function checkAnnouncementFits(meta: NodeMetadata, id: string): void {
  try {
    encodeMetadata({
      ...meta,
      model: id,
      hosted: { model: id, from: 0, to: 65535 },
      replica: meta.id,
      load: { sessions: 65535, queued: 65535, free: 65535, tokensPerSecond: 1e6 },
      dataPort: meta.dataPort || 65535,
    });
  } catch (e) {
    if (!(e instanceof MetadataError)) throw e;
    throw new AgentConfigError(
      `the model id "${id}" does not fit this agent's gossip metadata (${e.message}); give the ` +
        `file a shorter name`,
    );
  }
}

/**
 * How long an agent whose node id a live member holds keeps retrying before it gives up: twice
 * the time the id's previous holder (a pod restarted at a new address, its old self killed) takes
 * to be found dead in a 32-member cluster — probed once in a round of 32, its suspicion run out,
 * the id reclaimable — so a restart gets in while a real duplicate ends with a clear error.
 * 29 s with the local preset, 50 s lan, 7.8 min wan.
 */
export function duplicateIdPatience(g: GossipConfig): number {
  const members = 32;
  const round = members * g.probeInterval;
  const suspicion = g.suspicionMaxTimeoutMult *
    suspicionTimeout(g.suspicionMult, members, g.probeInterval);
  return Math.round(2 * (round + suspicion + g.deadNodeReclaimTime));
}

/** What `joinInBackground` tells the agent, and its timings (tests shorten them). */
export interface JoinOptions {
  /** The wait after our id was found taken. Default 5 s. */
  duplicateRetryMs?: number;
  /** Give up after the id has been refused this long. Default: duplicateIdPatience. */
  duplicatePatienceMs?: number;
  /** The id conflict began or ended (`s.idConflict` says which): re-plan, publish. */
  onConflict?: () => void;
  /** The id stayed taken for the whole patience: the agent must stop, with this message. */
  onGiveUp?: (message: string) => void;
}

/**
 * Retry joining the seeds until one answers (they may start after us). While a live member
 * elsewhere holds our id, `s.idConflict` says so (the agent stands aside: no placement, no
 * layers, requests refused); after `duplicatePatienceMs` of that, `onGiveUp`. Resolves when the
 * first attempt has settled (joined, refused or failed), so the agent plans after it: alone
 * before it, an agent whose id is taken planned itself the whole model.
 */
export function joinInBackground(s: AgentState, opts: JoinOptions = {}): Promise<void> {
  if (s.config.discover) void startDiscovery(s);
  const seeds = s.config.seeds.filter((x) => x !== s.gossip.transport.addr);
  if (seeds.length === 0) return Promise.resolve();
  const retryMs = opts.duplicateRetryMs ?? 5000;
  const patienceMs = opts.duplicatePatienceMs ?? duplicateIdPatience(s.gossip.config);
  let delay = 200;
  let refusedSince: number | undefined;
  const attempt = async () => {
    if (s.stopped) return;
    try {
      const n = await s.gossip.join(seeds);
      refusedSince = undefined;
      if (s.idConflict !== undefined) {
        s.idConflict = undefined;
        s.log("info", "the node id is ours now; joining the placement", { node: s.nodeId });
        opts.onConflict?.();
      }
      s.log("info", "joined the cluster", { seedsAnswered: n, members: s.gossip.numMembers() });
    } catch (e) {
      if ((e as Error).name === "DuplicateNodeIdError") {
        // The id's previous holder is still alive or suspect at another address: a restarted
        // pod (new IP, same node id) before its old self is declared dead, or a real
        // duplicate. Stand aside (a duplicate that planned alone loaded layers and served
        // requests as the id's holder) and keep trying for a while: before, the agent stayed
        // outside the cluster until restarted again.
        const now = Date.now();
        refusedSince ??= now;
        const message = `${(e as Error).message}. Until the id is free this agent is no ` +
          `member: it hosts no layers and serves no requests, and it stops ` +
          `${Math.round(patienceMs / 1000)} s after the first refusal`;
        const changed = s.idConflict === undefined;
        s.idConflict = message;
        if (changed) opts.onConflict?.();
        if (now - refusedSince >= patienceMs) {
          const why = `giving up: node id "${s.nodeId}" is still used by a live member after ` +
            `${Math.round((now - refusedSince) / 1000)} s of retries (${(e as Error).message})`;
          s.log("error", why);
          opts.onGiveUp?.(why);
          return;
        }
        s.log("error", (e as Error).message, {
          retryMs,
          givesUpInMs: patienceMs - (now - refusedSince),
        });
        setTimeout(attempt, retryMs);
        return;
      }
      s.log("warn", "join failed; retrying", { error: (e as Error).message, retryMs: delay });
      setTimeout(attempt, delay);
      delay = Math.min(delay * 2, 5000);
    }
  };
  return attempt();
}

/**
 * Run LAN multicast discovery for `--discover`: announce this agent on the group and join every
 * member of its cluster heard there, as a seed would be joined. Where the network has no
 * multicast (no route, no interface), a warning says so and the agent goes on with its seeds:
 * discovery is a convenience, not a reason to refuse to start. `options`: for tests.
 */
export async function startDiscovery(
  s: AgentState,
  options: DiscoveryOptions = {},
): Promise<MulticastDiscovery | undefined> {
  // The interface gossip listens on: the --bind address (an IPv6 one named by its interface,
  // as node:dgram takes it); bound to every interface, the one that holds the address this agent
  // announces, or the system's choice where none does (an address advertised through NAT).
  const bind = s.config.bind;
  let interfaceAddr: string | undefined;
  try {
    const wildcard = bind === "0.0.0.0" || bind === "::";
    const host = wildcard ? splitHostPort(s.gossip.localNode.addr).host : bind;
    interfaceAddr = !wildcard && !bind.includes(":")
      ? bind
      : multicastInterface(host, Deno.networkInterfaces());
  } catch {
    interfaceAddr = undefined;
  }
  let d: MulticastDiscovery;
  try {
    d = await MulticastDiscovery.start(s.gossip, {
      interfaceAddr,
      cluster: s.config.clusterName,
      logger: (level, msg, fields) => s.log(level, `discovery: ${msg}`, fields),
      ...options,
    });
  } catch (e) {
    s.log("warn", "multicast discovery is unavailable on this network; join with --seeds", {
      error: (e as Error).message,
    });
    return undefined;
  }
  // A stop that came while the socket was opening: nothing may join us back after our leave.
  if (s.stopped || s.draining) {
    d.stop();
    return undefined;
  }
  s.discovery = d;
  s.log("info", "multicast discovery started: joining members of this cluster heard on the LAN", {
    group: joinHostPort(d.group, d.port),
    cluster: s.config.clusterName,
    sealed: s.gossip.keyring !== null,
  });
  return d;
}

/**
 * The first half of a graceful stop: refuse new requests and new sessions, let those in flight
 * finish within the grace period (the requests this agent heads, and the sessions other heads
 * run through its stage), leave the gossip, then cut off what is left — with an error, never a
 * "stop" as if the model had finished — and give the cut-off streams a moment to say so.
 * `passing()`: the sessions open on this agent's stages.
 */
export async function drainAndLeave(s: AgentState, passing: () => number): Promise<void> {
  s.draining = true;
  // Requests still waiting for a slot would only lengthen the drain and be cut off: they are
  // answered now, to go to another agent.
  s.admission.failWaiting(shuttingDown(s.nodeId));
  const deadline = Date.now() + s.config.shutdownGrace;
  // Another head's session through this stage is as much in flight as a request headed here:
  // leaving under it makes that head replay the whole generation elsewhere (or wait until some
  // agent loads these layers, when none has room), where a few more passes would finish it.
  const busy = () => s.requests.size > 0 || passing() > 0;
  if (busy()) {
    s.log("info", "draining", {
      requests: s.requests.size,
      sessions: passing(),
      graceMs: s.config.shutdownGrace,
    });
  }
  while (busy() && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, deadline - Date.now()))));
  }
  // Before the leave: an announcement heard after it would join us back.
  s.discovery?.stop();
  s.discovery = undefined;
  try {
    // Not while another member holds our id: a leave under it would read as that member's.
    if (s.idConflict === undefined) await s.gossip.leave(2000);
  } catch (e) {
    s.log("warn", "leave failed", { error: String(e) });
  }
  s.stopped = true;
  s.events.closeAll();
  if (busy()) {
    s.log("warn", "shutdown cut off generations", {
      requests: s.requests.size,
      sessions: passing(),
    });
  }
  for (const c of s.requests.values()) c.abort(SHUTDOWN);
  // Let the cut-off streams send their error before the listeners close.
  for (let i = 0; i < 20 && s.requests.size > 0; i++) {
    await new Promise((r) => setTimeout(r, 25));
  }
}
