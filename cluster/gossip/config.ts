/**
 * Every timing and limit of the gossip protocol, with three presets in the manner of
 * memberlist's `Default{LAN,WAN,Local}Config`. Each field says *why* its default is what it is;
 * every one can be overridden: `lanConfig({ nodeId: "a", probeInterval: 2000 })`.
 *
 * @module
 */
import { type Rng, systemRng } from "./clock.ts";
import type { Keyring } from "./keyring.ts";
import type { NodeMetadata } from "./metadata.ts";

/** A log sink; the default writes nothing (the CLI prints JSON events instead). */
export type Logger = (
  level: "debug" | "info" | "warn",
  msg: string,
  fields?: Record<string, unknown>,
) => void;

/** Resolve a host name to IP addresses (A and AAAA). Injected so tests need no DNS server. */
export type Resolver = (host: string) => Promise<string[]>;

/** Full configuration of one member. All durations are milliseconds. */
export interface Config {
  /** Unique node id in the cluster; a second live member with the same id is refused at join. */
  nodeId: string;
  /** What this member advertises; defaults to an empty record with `nodeId`. */
  metadata?: NodeMetadata;
  /**
   * Time between probes of one member. With N members each member is probed about once per
   * interval, so this bounds how soon a failure is first noticed.
   */
  probeInterval: number;
  /** Wait for a direct ack before asking others; a few RTTs of the target network. */
  probeTimeout: number;
  /** Members asked to probe indirectly on a missed ack: routes around one bad link. */
  indirectChecks: number;
  /** Skip the TCP fallback probe (needed when a firewall drops UDP but not TCP). */
  disableTcpPings: boolean;
  /**
   * Minimum suspicion timeout = mult × max(1, log10 N) × probeInterval: time for the accused to
   * hear it is suspected (≈ log N gossip rounds) and refute.
   */
  suspicionMult: number;
  /** Suspicion starts at this × the minimum and shrinks with independent confirmations. */
  suspicionMaxTimeoutMult: number;
  /** Lifeguard: timeouts are stretched up to this factor when this node itself is unhealthy. */
  awarenessMaxMultiplier: number;
  /**
   * Retransmits per broadcast = mult × ceil(log10(N+1)): enough for an epidemic to finish.
   * 6, not memberlist's 4: in small clusters (log10 term = 1) with 20% loss, 4 sends left one
   * member in ten missing a join for a whole push-pull period (simulated, 5 members, 50 ms
   * links); 6 brought the worst of 40 runs to 200 ms. News is rare, so steady state is unchanged.
   */
  retransmitMult: number;
  /** Dedicated gossip tick; news spreads one hop per tick, so this sets dissemination speed. */
  gossipInterval: number;
  /** Random members gossiped to per tick (fan-out). */
  gossipNodes: number;
  /** Keep gossiping to a member this long after it died, so a falsely-dead one can refute. */
  gossipToTheDeadTime: number;
  /**
   * Full-state TCP exchange with one random member (anti-entropy); repairs anything gossip
   * lost. Scaled up with cluster size above 32 members, since each exchange costs O(N).
   */
  pushPullInterval: number;
  /**
   * How often to try a push-pull with one member that died or left. Gossip to the dead only
   * lasts `gossipToTheDeadTime`; this heals partitions that last longer (as Serf's reconnect).
   */
  reconnectInterval: number;
  /** Give up reconnecting to a dead member after this long; its entry is then forgotten. */
  reconnectTimeout: number;
  /** Stream connect/read timeout (push-pull, TCP fallback probe, join). */
  tcpTimeout: number;
  /**
   * A dead member's id can be claimed from a different address after this long. Guards against
   * an impostor taking over an id whose owner was only falsely declared dead.
   */
  deadNodeReclaimTime: number;
  /**
   * The incarnation a member's life starts at: by default the wall clock's seconds, so every
   * later life starts above the last one's (a life starting at 0 lost to any replayed message of
   * the one before: a recorded "dead at 14" marked a restarted member dead everywhere). Within a
   * life, refutations add to it as usual; the u32 wire field holds seconds until 2106.
   */
  startIncarnation: () => number;
  /** UDP payload limit; 1400 stays under a 1500-byte Ethernet MTU with IP/UDP headers. */
  maxPacketSize: number;
  /**
   * Most members the table holds; news of more is dropped ("full"). Ten times the largest
   * cluster this was measured on: it bounds what one push-pull of made-up ids can add.
   */
  maxMembers: number;
  /** Seal every packet and stream frame with this keyring (AES-256-GCM); null = plaintext. */
  keyring: Keyring | null;
  /**
   * The cluster's name, carried in every packet and stream frame's header (memberlist's Label;
   * the AES-GCM additional data with keys): members drop what another name carries, so two
   * clusters stay apart even when one is given a seed of the other. 1–255 bytes, in the clear.
   */
  clusterName: string;
  /** Randomness (seeded in simulations). */
  rng: Rng;
  /** DNS resolver for seed names; defaults to `Deno.resolveDns` A + AAAA. */
  resolver?: Resolver;
  /** Log sink. */
  logger?: Logger;
  /**
   * This member heard that it was declared dead and refuted it: peers saw it die, and will see
   * it join again. Called once per refuted death, after the refutation is queued.
   */
  onDeathRefuted?: () => void;
}

/** Overrides of any field; `nodeId` is required. */
export type ConfigInput = Partial<Config> & { nodeId: string };

function defaults(): Omit<Config, "nodeId"> {
  return {
    probeInterval: 400,
    probeTimeout: 200,
    indirectChecks: 3,
    disableTcpPings: false,
    suspicionMult: 3,
    suspicionMaxTimeoutMult: 4,
    awarenessMaxMultiplier: 8,
    retransmitMult: 6,
    gossipInterval: 100,
    gossipNodes: 3,
    gossipToTheDeadTime: 30_000,
    pushPullInterval: 30_000,
    tcpTimeout: 10_000,
    reconnectInterval: 10_000,
    reconnectTimeout: 3_600_000,
    deadNodeReclaimTime: 5_000,
    startIncarnation: () => Math.floor(Date.now() / 1000),
    maxPacketSize: 1400,
    maxMembers: 10_000,
    keyring: null,
    clusterName: "default",
    rng: systemRng,
  };
}

/**
 * Data-centre LAN (sub-millisecond RTT). Tuned so a killed member is known dead by *all* others
 * within 6 s in a 100-member cluster: memberlist's 1 s probe interval and suspicion mult 4 give a
 * minimum suspicion of 8 s at N = 100 alone. We probe every 400 ms with mult 3 (2.4 s minimum at
 * N = 100; 1.2 s at N ≤ 10), which measured p99 ≈ 5 s in simulation; a 500 ms interval left no
 * margin (p99 6.0 s). probeTimeout 200 ms still covers a 50 ± 20 ms-per-hop path (the netns
 * test) for the direct ping; indirect and TCP probes get the rest of the interval. Gossip every
 * 100 ms crosses 100 members in ~0.3 s. Push-pull every 30 s, like memberlist (by digest, so
 * it costs ~20 bytes a member).
 *
 * @example
 * ```ts
 * const cfg = lanConfig({ nodeId: "gpu-1" });
 * ```
 */
export function lanConfig(over: ConfigInput): Config {
  return { ...defaults(), ...over };
}

/**
 * Wide-area: RTTs of 50–300 ms and real loss. Probes are slower (3 s, 1.5 s timeout) so a
 * congested path is not mistaken for a death; suspicion mult 6 because gossip rounds are slow
 * too; larger fan-out (4) to make up for a longer gossip interval (500 ms); push-pull every 60 s.
 */
export function wanConfig(over: ConfigInput): Config {
  return {
    ...defaults(),
    probeInterval: 3000,
    probeTimeout: 1500,
    suspicionMult: 6,
    suspicionMaxTimeoutMult: 4,
    gossipInterval: 500,
    gossipNodes: 4,
    gossipToTheDeadTime: 60_000,
    pushPullInterval: 60_000,
    tcpTimeout: 30_000,
    reconnectInterval: 30_000,
    reconnectTimeout: 6 * 3_600_000,
    deadNodeReclaimTime: 30_000,
    ...over,
  };
}

/**
 * One host (loopback, tests, a laptop demo): RTT is microseconds, so everything is fast —
 * 300 ms probes with 100 ms timeouts, 50 ms gossip, 10 s push-pull, 1 s stream timeout, a
 * reconnect attempt to a dead member every 2 s — and a
 * dead id can be reclaimed after 1 s so a restarted process rejoins at once.
 */
export function localConfig(over: ConfigInput): Config {
  return {
    ...defaults(),
    probeInterval: 300,
    probeTimeout: 100,
    suspicionMult: 3,
    suspicionMaxTimeoutMult: 3,
    gossipInterval: 50,
    gossipToTheDeadTime: 10_000,
    pushPullInterval: 10_000,
    tcpTimeout: 1000,
    reconnectInterval: 2000,
    reconnectTimeout: 600_000,
    deadNodeReclaimTime: 1000,
    ...over,
  };
}

/**
 * Push-pull interval scaled by cluster size: unchanged up to 32 members, then one more multiple
 * per doubling, as memberlist does — each exchange carries all N members, so the cost per
 * second stays near O(log N) per member instead of O(N).
 */
export function pushPullScale(intervalMs: number, n: number): number {
  const threshold = 32;
  if (n <= threshold) return intervalMs;
  const mult = Math.ceil(Math.log2(n) - Math.log2(threshold)) + 1;
  return intervalMs * mult;
}
