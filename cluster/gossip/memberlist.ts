/**
 * The public object: create a member on a transport, join a cluster, watch events, publish
 * metadata, leave. Everything protocol-related lives in `state.ts`; this file is the API.
 *
 * @module
 */
import { lookup } from "node:dns/promises";
import { type Config, type ConfigInput, lanConfig, type Resolver } from "./config.ts";
import { emptyMetadata, encodeMetadata, type NodeMetadata } from "./metadata.ts";
import { DuplicateNodeIdError } from "./member.ts";
import type { EventType, Member, MemberEvent, Stats } from "./member.ts";
import { GossipState } from "./state.ts";
import {
  joinHostPort,
  splitHostPort,
  type Transport,
  UdpTransport,
  type UdpTransportOptions,
} from "./transport.ts";
import type { Keyring } from "./keyring.ts";
import { checkClusterName } from "./label.ts";

/** No seed could be reached; the message lists each seed's error. */
export class JoinError extends Error {
  /** @param message per-seed failures */
  constructor(message: string) {
    super(message);
    this.name = "JoinError";
  }
}

/** Default gossip port (UDP and TCP). */
export const DEFAULT_GOSSIP_PORT = 7946;

/** Resolve with the system resolver (getaddrinfo: /etc/hosts, DNS A and AAAA). */
export const systemResolver: Resolver = async (host) => {
  const all = await lookup(host, { all: true });
  return [...new Set(all.map((a) => a.address))];
};

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/**
 * Expand seeds into `host:port` addresses. `host:port`, `[v6]:port`, a bare host (default port),
 * or a DNS name whose every A/AAAA record becomes a seed (a Kubernetes headless Service).
 */
export async function resolveSeeds(
  seeds: string[],
  resolver: Resolver,
  defaultPort: number,
): Promise<string[]> {
  const out: string[] = [];
  for (const raw of seeds.map((s) => s.trim()).filter(Boolean)) {
    let host: string, port: number;
    try {
      ({ host, port } = splitHostPort(raw));
    } catch {
      host = raw.replace(/^\[|\]$/g, "");
      port = defaultPort;
    }
    if (IPV4.test(host) || host.includes(":")) out.push(joinHostPort(host, port));
    else {
      let ips: string[];
      try {
        ips = await resolver(host);
      } catch (e) {
        throw new JoinError(`cannot resolve seed "${raw}": ${(e as Error).message}`);
      }
      for (const ip of ips) out.push(joinHostPort(ip, port));
    }
  }
  return [...new Set(out)];
}

/** Listener of one event type. */
export type Listener = (e: MemberEvent) => void;

/**
 * One cluster member.
 *
 * @example
 * ```ts
 * const transport = await UdpTransport.listen({ bindAddr: "127.0.0.1", port: 7946 });
 * const ml = Memberlist.create(lanConfig({ nodeId: "gpu-1" }), transport);
 * ml.on("dead", (e) => console.log(e.member.id, "died"));
 * await ml.join(["10.0.0.2:7946"]);
 * ```
 */
export class Memberlist {
  private readonly listeners = new Map<EventType, Set<Listener>>();
  private readonly state: GossipState;
  private closed = false;

  private constructor(readonly config: Config, readonly transport: Transport) {
    this.state = new GossipState(config, transport, (e) => {
      for (const fn of this.listeners.get(e.type) ?? []) {
        try {
          fn(e);
        } catch (err) {
          config.logger?.("warn", "event listener threw", { error: String(err) });
        }
      }
    }, (type) => (this.listeners.get(type)?.size ?? 0) > 0);
    const meta = config.metadata ?? emptyMetadata(config.nodeId);
    if (meta.id !== config.nodeId) {
      throw new Error(
        `metadata id "${meta.id}" differs from nodeId "${config.nodeId}"; they must match`,
      );
    }
    this.state.start(encodeMetadata(meta));
  }

  /** Start a member on an existing transport (real or simulated). */
  static create(config: Config, transport: Transport): Memberlist {
    if (!config.nodeId) throw new Error("nodeId is empty; every member needs a unique id");
    checkClusterName(config.clusterName);
    return new Memberlist(config, transport);
  }

  /** Bind a UDP/TCP transport and start a member on it. */
  static async listen(
    config: Config | ConfigInput,
    opts: UdpTransportOptions = {},
  ): Promise<Memberlist> {
    const cfg = "probeInterval" in config && config.probeInterval !== undefined
      ? config as Config
      : lanConfig(config);
    return Memberlist.create(cfg, await UdpTransport.listen(opts));
  }

  /** This member. */
  get localNode(): Member {
    return this.state.member(this.state.local);
  }

  /** Counters: dropped packets per reason, probes, push-pulls. */
  get stats(): Stats {
    return this.state.stats;
  }

  /** False once this member began to leave or shut down (discovery then stops joining). */
  get running(): boolean {
    return !this.closed && !this.state.leaving;
  }

  /** The keyring in use (rotate keys on it), or null. */
  get keyring(): Keyring | null {
    return this.config.keyring;
  }

  /** Broadcasts waiting to be gossiped (a backlog after mass joins; 0 at steady state). */
  queuedBroadcasts(): number {
    return this.state.queue.length;
  }

  /** Lifeguard health score of this member (0 = healthy). */
  get healthScore(): number {
    return this.state.awareness.healthScore;
  }

  /** Members that are alive or suspect, this one included. */
  members(): Member[] {
    const out: Member[] = [];
    for (const s of this.state.nodes.values()) {
      if (s.status === "alive" || s.status === "suspect") out.push(this.state.member(s));
    }
    return out;
  }

  /**
   * Probe member `id` now, out of turn, because the application saw its connection fail; it
   * becomes suspect within one probe interval unless it answers. False when no probe was sent
   * (ourselves, unknown, not alive, or a probe already out).
   */
  probeNow(id: string): boolean {
    return !this.closed && this.state.prober.probeNow(id);
  }

  /**
   * Whether a live process at `addr` answers, now, as this member's own id: what a claim that
   * another process holds our id must show before we believe it (a replayed or forged
   * announcement alone must not make a live holder stand aside).
   */
  answersAsUs(addr: string, timeoutMs = this.config.tcpTimeout): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    return this.state.prober.pingAt(addr, this.state.id, timeoutMs);
  }

  /** Every known member, including dead and left ones not yet forgotten. */
  allMembers(): Member[] {
    return [...this.state.nodes.values()].map((s) => this.state.member(s));
  }

  /** One member by id, in any state, or undefined. */
  member(id: string): Member | undefined {
    const s = this.state.nodes.get(id);
    return s && this.state.member(s);
  }

  /** Number of alive or suspect members, this one included. */
  numMembers(): number {
    return this.state.numAlive();
  }

  /** Subscribe to one event type; returns the unsubscribe function. */
  on(type: EventType, fn: Listener): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, set = new Set());
    set.add(fn);
    return () => set.delete(fn);
  }

  /**
   * Join through seeds (`host:port`, or DNS names resolving to many records); push-pulls full
   * state with each. Returns how many seeds answered. Throws {@linkcode DuplicateNodeIdError}
   * when our id is taken by a live member elsewhere, {@linkcode JoinError} when none answered.
   */
  async join(seeds: string[]): Promise<number> {
    const port = splitHostPort(this.transport.addr).port || DEFAULT_GOSSIP_PORT;
    const addrs = (await resolveSeeds(seeds, this.config.resolver ?? systemResolver, port))
      .filter((a) => a !== this.transport.addr);
    const errors: string[] = [];
    let ok = 0;
    for (const a of addrs) {
      try {
        await this.state.pushPull.join(a);
        ok++;
      } catch (e) {
        if (e instanceof DuplicateNodeIdError) throw e;
        errors.push(`${a}: ${(e as Error).message}`);
      }
    }
    if (ok === 0 && addrs.length > 0) {
      throw new JoinError(
        `could not join through any seed (${errors.join("; ")}); check addresses, ports and keys`,
      );
    }
    return ok;
  }

  /**
   * Publish new metadata (validated, ≤ 512 bytes): sent as an alive with a higher incarnation.
   */
  updateMetadata(meta: NodeMetadata): void {
    if (meta.id !== this.config.nodeId) {
      throw new Error(`metadata id "${meta.id}" differs from nodeId "${this.config.nodeId}"`);
    }
    this.state.updateLocalMeta(encodeMetadata(meta));
  }

  /**
   * Leave gracefully: gossip our own departure and wait until it has been sent enough times or
   * `timeoutMs` passed. Others mark us "left" rather than "dead". Call `shutdown` afterwards.
   */
  async leave(timeoutMs = 5000): Promise<void> {
    if (this.state.leaving || this.closed) return;
    this.state.leaving = true;
    const others = this.members().length > 1;
    const local = this.state.local;
    let resolveDone!: () => void;
    const done = new Promise<void>((r) => (resolveDone = r));
    this.state.deadNode({
      type: "dead",
      incarnation: local.incarnation,
      node: local.id,
      from: local.id,
    }, () => resolveDone());
    if (!others) return;
    let timer: unknown;
    await Promise.race([
      done,
      new Promise<void>((r) => (timer = this.transport.clock.setTimeout(r, timeoutMs))),
    ]);
    this.transport.clock.clearTimeout(timer);
  }

  /** Stop all loops and close the transport. No leave message is sent (see `leave`). */
  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.state.stop();
    this.state.queue.reset();
    await this.transport.close();
  }
}

/** Shorthand for {@linkcode Memberlist.create}. */
export function create(config: Config, transport: Transport): Memberlist {
  return Memberlist.create(config, transport);
}

export { DuplicateNodeIdError };
