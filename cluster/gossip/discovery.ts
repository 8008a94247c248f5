/**
 * Opt-in LAN auto-discovery: members announce their gossip address on a UDP multicast group and
 * join whoever they hear. For a lab or a home network with no seed list and no DNS; off by
 * default because multicast leaks the cluster's existence to the whole segment (announcements
 * are sealed with the keyring when one is set, so only key holders can read or forge them).
 *
 * @module
 */
import dgram from "node:dgram";
import { Reader, Writer } from "./codec.ts";
import type { Memberlist } from "./memberlist.ts";
import { open, seal } from "./net.ts";

/** Options of multicast discovery. */
export interface DiscoveryOptions {
  /** Multicast group; an administratively-scoped (239/8) address stays inside the site. */
  group?: string;
  /** UDP port of the group (not the gossip port). */
  port?: number;
  /** Local interface address to send and join on; default: the system's choice. */
  interfaceAddr?: string;
  /** Time between announcements; 2 s finds peers quickly and costs ~30 bytes/s. */
  intervalMs?: number;
  /** Cluster name; announcements for another cluster are ignored. */
  cluster?: string;
  /** Multicast TTL; 1 keeps announcements on the local segment. */
  ttl?: number;
}

const MAGIC = 0x444c4c4d; // "DLLM"

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
  /** Announcements heard from other members. */
  heard = 0;

  private constructor(
    private readonly ml: Memberlist,
    private readonly sock: dgram.Socket,
    private readonly opts: Required<Omit<DiscoveryOptions, "interfaceAddr">> & {
      interfaceAddr?: string;
    },
  ) {}

  /** Bind the group port, join the group, start announcing. */
  static async start(ml: Memberlist, options: DiscoveryOptions = {}): Promise<MulticastDiscovery> {
    const opts = {
      group: options.group ?? "239.255.79.46",
      port: options.port ?? 7947,
      interfaceAddr: options.interfaceAddr,
      intervalMs: options.intervalMs ?? 2000,
      cluster: options.cluster ?? "default",
      ttl: options.ttl ?? 1,
    };
    const sock = dgram.createSocket({ type: "udp4", reuseAddr: true });
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
    sock.on("message", (m: Uint8Array) => d.onMessage(new Uint8Array(m)));
    sock.on("error", () => {});
    d.announce();
    d.timer = setInterval(() => d.announce(), opts.intervalMs);
    return d;
  }

  private announce() {
    const me = this.ml.localNode;
    const plain = encodeAnnouncement(this.opts.cluster, me.id, me.addr);
    this.sock.send(seal(this.ml.keyring, plain), this.opts.port, this.opts.group, () => {});
  }

  private onMessage(b: Uint8Array) {
    let a;
    try {
      a = decodeAnnouncement(open(this.ml.keyring, b));
    } catch {
      return; // someone else's traffic, or a wrong key: ignore
    }
    if (!a || a.cluster !== this.opts.cluster || a.id === this.ml.localNode.id) return;
    this.heard++;
    const known = this.ml.member(a.id);
    if (
      (known && (known.status === "alive" || known.status === "suspect")) ||
      this.joining.has(a.addr)
    ) return;
    this.joining.add(a.addr);
    this.ml.join([a.addr]).catch(() => {}).finally(() => this.joining.delete(a.addr));
  }

  /** Stop announcing and leave the group. */
  stop(): void {
    clearInterval(this.timer);
    try {
      this.sock.close();
    } catch {
      // already closed
    }
  }
}
