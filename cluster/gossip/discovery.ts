/**
 * Opt-in LAN auto-discovery: members announce their gossip address on a UDP multicast group and
 * join whoever they hear, as they would a seed. For a lab or a home network with no seed list
 * and no DNS; off by default because multicast tells the whole segment that a cluster is there.
 * With a keyring, an announcement is sealed whole (cluster name, node id and address included),
 * so only key holders can read or forge one; without, a member joins an announced address only
 * at the host the announcement came from, so a stranger cannot point it at a third host.
 * Announcements of another cluster are ignored, and the join itself goes through the gossip's
 * cluster-name check.
 *
 * @module
 */
import dgram from "node:dgram";
import { isIPv6 } from "node:net";
import { Reader, Writer } from "./codec.ts";
import type { Logger } from "./config.ts";
import type { Memberlist } from "./memberlist.ts";
import { decrypt, encrypt } from "./security.ts";
import { joinHostPort, splitHostPort } from "./transport.ts";

/** Options of multicast discovery. */
export interface DiscoveryOptions {
  /**
   * Multicast group. Default: 239.255.79.46 (IPv4, administratively scoped: it stays inside the
   * site), or ff05::79:46 (IPv6, site scope) when the member announces an IPv6 address; the
   * group's family picks the socket's.
   */
  group?: string;
  /** UDP port of the group (not the gossip port). */
  port?: number;
  /**
   * Interface to send and join on: an IPv4 address, or for IPv6 "::%name" (the interface's name,
   * see {@linkcode multicastInterface}); default: the system's choice.
   */
  interfaceAddr?: string;
  /** Time between announcements; 2 s finds peers quickly and costs ~30 bytes/s. */
  intervalMs?: number;
  /** Cluster name; announcements for another cluster are ignored. Default: the member's. */
  cluster?: string;
  /** Multicast TTL; 1 keeps announcements on the local segment. */
  ttl?: number;
  /** Where a failure to send announcements is said (once); default: the member's logger. */
  logger?: Logger;
}

const MAGIC = 0x444c4c4d; // "DLLM"

/**
 * The additional data of a sealed announcement: it keeps an announcement from opening as a
 * gossip packet and a gossip packet from opening as an announcement (one key seals both).
 */
const AAD = new TextEncoder().encode("dllm multicast discovery");

/** Joins in flight at once: a burst of announcements must not open a burst of streams. */
const MAX_JOINING = 8;
/**
 * How long an address whose join failed is not tried again: a host announcing ports that accept
 * and never answer held every join slot (each for the 10 s join timeout, tried again at every
 * announcement), and the real members on the LAN were never joined.
 */
const FAILED_JOIN_BACKOFF_MS = 30_000;

/** The default groups: IPv4 (administratively scoped) and IPv6 (site scope, ff05::/16). */
export const DISCOVERY_GROUPS = { v4: "239.255.79.46", v6: "ff05::79:46" } as const;

/**
 * The interface a member announcing `host` sends and listens on, as node:dgram names it: the
 * IPv4 address itself, or "::%name" for the interface that holds an IPv6 one; undefined (the
 * system's choice) for a wildcard or an address no local interface has (e.g. one advertised
 * through NAT).
 */
export function multicastInterface(
  host: string,
  interfaces: readonly Deno.NetworkInterfaceInfo[],
): string | undefined {
  const h = canonicalHost(host);
  const nic = interfaces.find((i) => canonicalHost(i.address) === h);
  if (!nic || h === "0.0.0.0" || h === "::") return undefined;
  return nic.family === "IPv6" ? `::%${nic.name}` : nic.address;
}

/**
 * One spelling per address, so an announced host and a datagram's source compare equal however
 * each is written ("fd00:0::2" and "fd00::2"); names and scoped addresses pass unchanged.
 */
export function canonicalHost(host: string): string {
  if (!isIPv6(host) || host.includes("%")) return host;
  try {
    return new URL(`http://[${host}]/`).hostname.slice(1, -1);
  } catch {
    return host;
  }
}

/** Encode an announcement (exported for tests). */
export function encodeAnnouncement(cluster: string, id: string, addr: string): Uint8Array {
  return new Writer().u32(MAGIC).str8(cluster).str8(id).str8(addr).finish();
}

/** Decode an announcement; throws `DecodeError` when malformed. */
export function decodeAnnouncement(
  b: Uint8Array,
): { cluster: string; id: string; addr: string } | null {
  const r = new Reader(b);
  if (r.u32("magic") !== MAGIC) return null;
  const out = { cluster: r.str8("cluster"), id: r.str8("id"), addr: r.str8("addr") };
  r.end("announcement");
  return out;
}

/**
 * Announce and listen on a multicast group; join every member heard that we do not know yet.
 *
 * @example
 * ```ts
 * const d = await MulticastDiscovery.start(ml, { cluster: "lab" });
 * // … later
 * d.stop();
 * ```
 */
export class MulticastDiscovery {
  private timer: ReturnType<typeof setInterval> | undefined;
  private joining = new Set<string>();
  /** Hosts with a join in flight: one at a time per announcing host. */
  private joiningHosts = new Set<string>();
  /** Addresses whose join failed, and until when they are not tried again. */
  private backoff = new Map<string, number>();
  private sendFailed = false;
  /** Addresses whose failed join was logged. */
  private failed = new Set<string>();
  /** Announcements heard from other members. */
  heard = 0;
  /** Members joined through an announcement. */
  joined = 0;

  private constructor(
    private readonly ml: Memberlist,
    private readonly sock: dgram.Socket,
    private readonly opts: Required<Omit<DiscoveryOptions, "interfaceAddr" | "logger">> & {
      interfaceAddr?: string;
      logger?: Logger;
    },
  ) {}

  /** Bind the group port, join the group, start announcing. */
  static async start(ml: Memberlist, options: DiscoveryOptions = {}): Promise<MulticastDiscovery> {
    // The group of the family of the address this member announces: an agent gossiping over
    // IPv6 (an IPv6-only network) announces on an IPv6 group, where its peers can answer.
    let announced = "";
    try {
      announced = splitHostPort(ml.localNode.addr).host;
    } catch {
      // a member address that is not host:port: announce on the IPv4 group
    }
    const opts = {
      group: options.group ?? (isIPv6(announced) ? DISCOVERY_GROUPS.v6 : DISCOVERY_GROUPS.v4),
      port: options.port ?? 7947,
      interfaceAddr: options.interfaceAddr,
      intervalMs: options.intervalMs ?? 2000,
      cluster: options.cluster ?? ml.config.clusterName,
      ttl: options.ttl ?? 1,
      logger: options.logger ?? ml.config.logger,
    };
    const sock = dgram.createSocket({
      type: isIPv6(opts.group) ? "udp6" : "udp4",
      reuseAddr: true,
    });
    await new Promise<void>((resolve, reject) => {
      sock.once("error", reject);
      sock.bind(opts.port, () => resolve());
    }).catch((e) => {
      sock.close();
      throw new Error(`multicast discovery cannot bind port ${opts.port}: ${e.message}`);
    });
    try {
      sock.addMembership(opts.group, opts.interfaceAddr);
      sock.setMulticastTTL(opts.ttl);
      sock.setMulticastLoopback(true);
      if (opts.interfaceAddr) sock.setMulticastInterface(opts.interfaceAddr);
    } catch (e) {
      sock.close();
      throw new Error(
        `multicast discovery cannot join group ${opts.group}: ${(e as Error).message}`,
      );
    }
    const d = new MulticastDiscovery(ml, sock, opts);
    sock.on(
      "message",
      (m: Uint8Array, rinfo: { address: string }) => d.onMessage(new Uint8Array(m), rinfo.address),
    );
    sock.on("error", () => {});
    d.announce();
    d.timer = setInterval(() => d.announce(), opts.intervalMs);
    return d;
  }

  private announce() {
    // A member that left or shut down must not be joined back by what it hears.
    if (!this.ml.running) return this.stop();
    const me = this.ml.localNode;
    const plain = encodeAnnouncement(this.opts.cluster, me.id, me.addr);
    const keyring = this.ml.keyring;
    const bytes = keyring ? encrypt(keyring.primary, plain, AAD) : plain;
    this.sock.send(bytes, this.opts.port, this.opts.group, (e: Error | null) => {
      // No route to the group (no multicast on this network): say so once, keep trying (the
      // network may come up), and let --seeds do the joining meanwhile.
      if (!e || this.sendFailed) return;
      this.sendFailed = true;
      this.opts.logger?.(
        "warn",
        "multicast discovery cannot send announcements; join with --seeds",
        {
          group: joinHostPort(this.opts.group, this.opts.port),
          error: e.message,
        },
      );
    });
  }

  private onMessage(b: Uint8Array, source: string) {
    if (!this.ml.running) return;
    const keyring = this.ml.keyring;
    let a;
    try {
      a = decodeAnnouncement(keyring ? decrypt(keyring.keys, b, AAD) : b);
    } catch {
      return; // someone else's traffic, or a wrong key: ignore
    }
    if (!a || a.cluster !== this.opts.cluster || a.id === this.ml.localNode.id) return;
    let host: string;
    try {
      host = splitHostPort(a.addr).host;
    } catch {
      return;
    }
    // Unsealed, anyone can announce anything: join only the host that sent it.
    if (!keyring && canonicalHost(host) !== canonicalHost(source)) return;
    this.heard++;
    const known = this.ml.member(a.id);
    const hostKey = canonicalHost(source);
    if (
      (known && (known.status === "alive" || known.status === "suspect")) ||
      this.joining.has(a.addr) || this.joining.size >= MAX_JOINING ||
      this.joiningHosts.has(hostKey) || (this.backoff.get(a.addr) ?? 0) > Date.now()
    ) return;
    this.joining.add(a.addr);
    this.joiningHosts.add(hostKey);
    const { id, addr } = a;
    this.ml.join([addr]).then(() => {
      this.joined++;
      this.backoff.delete(addr);
      this.opts.logger?.("info", "joined a member heard by multicast discovery", { id, addr });
    }).catch((e: Error) => {
      if (this.backoff.size >= 256) this.backoff.clear();
      this.backoff.set(addr, Date.now() + FAILED_JOIN_BACKOFF_MS);
      // Once per address: it announces every interval, and is tried again each time.
      if (this.failed.has(addr) || this.failed.size >= 256) return;
      this.failed.add(addr);
      this.opts.logger?.("warn", "cannot join a member heard by multicast discovery", {
        id,
        addr,
        error: e.message,
      });
    }).finally(() => {
      this.joining.delete(addr);
      this.joiningHosts.delete(hostKey);
    });
  }

  /** The multicast group announcements go to. */
  get group(): string {
    return this.opts.group;
  }

  /** The group's UDP port. */
  get port(): number {
    return this.opts.port;
  }

  /** Stop announcing and leave the group. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    try {
      this.sock.close();
    } catch {
      // already closed
    }
  }
}
