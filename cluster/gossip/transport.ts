/**
 * The socket boundary. The protocol core only sees {@linkcode Transport}: send a datagram,
 * receive datagrams, open/accept a framed stream. {@linkcode UdpTransport} implements it with
 * `node:dgram` + `node:net`; `sim.ts` implements it on a virtual network.
 *
 * @module
 */
import dgram from "node:dgram";
import net from "node:net";
import { type Clock, type Rng, systemClock, systemRng } from "./clock.ts";
import { DecodeError } from "./codec.ts";
import {
  type ConnectionLimits,
  type GuardedListener,
  guardListener,
  joinHostPort,
  type Warn,
} from "../net/mod.ts";

/** A bidirectional stream of length-delimited frames (push-pull, TCP fallback probe). */
export interface Stream {
  /** The peer's address. */
  readonly remoteAddr: string;
  /** Queue one frame for sending. */
  send(frame: Uint8Array): void;
  /**
   * The next frame; rejects on timeout, a malformed frame, or close ({@linkcode
   * StreamClosedError}).
   */
  receive(timeoutMs: number): Promise<Uint8Array>;
  /** Close both directions. */
  close(): void;
}

/**
 * A stream's bytes announced a frame no member sends (over {@linkcode MAX_FRAME}): another
 * protocol's bytes ("PRI " of HTTP/2, "GET " of HTTP/1, a TLS record), not gossip.
 */
export class FrameError extends DecodeError {
  override name = "FrameError";
  /** @param head the stream's first bytes (its would-be length) @param message what was wrong */
  constructor(readonly head: Uint8Array, message: string) {
    super(message);
  }
}

/** A stream's peer (or this side) closed it: no more frames will come. */
export class StreamClosedError extends Error {
  override name = "StreamClosedError";
}

/** What the gossip core needs from a network. */
export interface Transport {
  /** The address other members reach us on, `host:port`. */
  readonly addr: string;
  /** The time domain this transport lives in (virtual in the simulator). */
  readonly clock: Clock;
  /** Best-effort datagram. Never throws; a failed send is a lost packet. */
  sendPacket(addr: string, bytes: Uint8Array): void;
  /** Register the datagram handler (one). */
  onPacket(handler: (from: string, bytes: Uint8Array) => void): void;
  /** Open a stream; rejects after `timeoutMs`. */
  dialStream(addr: string, timeoutMs: number): Promise<Stream>;
  /** Register the handler for accepted streams (one). */
  onStream(handler: (stream: Stream) => void): void;
  /** Bytes sent so far, by kind, for bandwidth figures. */
  readonly bytesSent: { udp: number; tcp: number };
  /** Stop sending and receiving. */
  close(): Promise<void>;
}

export { joinHostPort };

/** Split `host:port` / `[v6]:port`; throws a clear error when the port is missing. */
export function splitHostPort(addr: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(addr) ?? /^([^:\[\]]+):(\d+)$/.exec(addr);
  if (!m) throw new Error(`address "${addr}" is not host:port (IPv6 as [addr]:port)`);
  const port = Number(m[2]);
  if (port < 0 || port > 65535) throw new Error(`address "${addr}" has port ${port} out of range`);
  return { host: m[1], port };
}

/** Largest stream frame accepted; a push-pull of 10 000 members is far below this. */
export const MAX_FRAME = 16 << 20;

/** Accepted gossip streams open at once; more are closed on arrival. */
export const MAX_INBOUND_STREAMS = 128;

/**
 * Bounds of the gossip TCP listener: 128 streams (push-pulls are short and few, and send at
 * once: at the bound the oldest stream that has not delivered a frame makes room, so sockets
 * held open silently cannot keep the members' own push-pulls out; when every one is busy the new
 * one is closed); a stream must deliver its first frame within 10 s. Its handler closes it after.
 */
export const GOSSIP_STREAM_LIMITS: ConnectionLimits = {
  maxConnections: MAX_INBOUND_STREAMS,
  silentMs: 10_000,
  idleMs: 0,
};

/**
 * Most frames a stream holds unread: a gossip exchange reads at most two, so more is someone
 * streaming frames at us (4-byte empty frames by the million cost 60x their size in copies and
 * views, gigabytes, and stalled the event loop until the agent was declared dead).
 */
export const MAX_QUEUED_FRAMES = 4;

/**
 * Most bytes all of a listener's inbound streams hold unread together (partial frames and
 * frames not taken yet), before any of them is authenticated: 128 streams each announcing a
 * 16 MiB frame and sending all but its last byte pinned 2.3 GB. A push-pull of a 10 000-member
 * cluster is a few MB.
 */
export const INBOUND_BUFFER_BUDGET = 64 << 20;

/** Bytes held unread by a set of streams, against a bound (one per listener). */
export interface BufferBudget {
  used: number;
  readonly max: number;
}

/** Framed stream over a `node:net` socket: `u32 length | bytes`. */
class SocketStream implements Stream {
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private frames: Uint8Array[] = [];
  private waiters: { resolve: (b: Uint8Array) => void; reject: (e: Error) => void }[] = [];
  private error: Error | null = null;
  /** Bytes of this stream counted in `budget` (received, not yet taken by a reader). */
  private held = 0;
  /** Whether the guard counts this stream busy (see setBusy). */
  private busy = false;
  /** Closed by us: what still arrives is dropped, not parsed. */
  private closed = false;

  /**
   * @param activity an inbound stream's standing with its listener's guard: busy while it has
   * a frame to work on, evictable (at the cap) while it waits for its peer
   * @param budget the bytes the listener's streams may hold unread together
   */
  constructor(
    private readonly sock: net.Socket,
    readonly remoteAddr: string,
    private readonly counter: { tcp: number },
    private readonly activity?: { busy(): void; done(): void },
    private readonly budget?: BufferBudget,
  ) {
    sock.on("data", (d: Uint8Array) => this.onData(d));
    sock.on("error", (e: Error) => this.fail(e));
    sock.on("close", () => this.fail(new StreamClosedError(`stream to ${remoteAddr} closed`)));
  }

  private onData(d: Uint8Array) {
    if (this.closed || this.error) return;
    if (this.budget && this.budget.used + d.length > this.budget.max) {
      return this.abort(
        new FrameError(
          d.slice(0, Math.min(d.length, 8)),
          `gossip streams hold more than ${this.budget.max} bytes unread: closing this one`,
        ),
      );
    }
    this.hold(d.length);
    this.chunks.push(new Uint8Array(d));
    this.buffered += d.length;
    while (this.buffered >= 4) {
      // The header may span chunks: join what is here (at most once per frame).
      if (this.chunks[0].length < 4) this.chunks = [concat(this.chunks, this.buffered)];
      const head = this.chunks[0];
      const len = new DataView(head.buffer, head.byteOffset).getUint32(0);
      if (len > MAX_FRAME || len === 0) {
        return this.abort(
          new FrameError(
            head.slice(0, Math.min(head.length, 8)),
            len === 0
              ? "an empty stream frame: not gossip"
              : `stream frame of ${len} bytes exceeds ${MAX_FRAME}: not gossip`,
          ),
        );
      }
      // Joined once, when the whole frame is here: joining at every chunk cost the square of
      // the frame's size (16 MiB of a peer's bytes stalled the event loop for seconds).
      if (this.buffered < 4 + len) return;
      if (this.frames.length >= MAX_QUEUED_FRAMES) {
        return this.abort(
          new FrameError(head.slice(0, 8), `more than ${MAX_QUEUED_FRAMES} frames unread`),
        );
      }
      const all = this.chunks.length === 1 ? head : concat(this.chunks, this.buffered);
      this.frames.push(all.slice(4, 4 + len));
      // A frame to work on: ours to answer, not to be evicted for a newcomer.
      this.setBusy(true);
      this.chunks = [all.subarray(4 + len)];
      this.buffered = all.length - 4 - len;
      this.flush();
    }
  }

  /** Count `n` more (or, negative, fewer) unread bytes against the budget. */
  private hold(n: number) {
    this.held += n;
    if (this.budget) this.budget.used += n;
  }

  /** A frame leaves for its reader: its bytes (and its 4-byte length) no longer held. */
  private take(frame: Uint8Array): Uint8Array {
    this.hold(-Math.min(this.held, frame.length + 4));
    return frame;
  }

  private setBusy(b: boolean) {
    if (!this.activity || b === this.busy) return;
    this.busy = b;
    if (b) this.activity.busy();
    else this.activity.done();
  }

  /** Fail on a peer's bytes no member sends, and close. */
  private abort(e: Error) {
    this.fail(e);
    this.sock.destroy();
  }

  private flush() {
    while (this.frames.length && this.waiters.length) {
      this.waiters.shift()!.resolve(this.take(this.frames.shift()!));
    }
  }

  private fail(e: Error) {
    if (!this.error) this.error = e;
    for (const w of this.waiters.splice(0)) w.reject(this.error);
    // Nothing more will be read: what it held is freed.
    this.frames = [];
    this.chunks = [];
    this.buffered = 0;
    this.hold(-this.held);
  }

  send(frame: Uint8Array): void {
    const hdr = new Uint8Array(4);
    new DataView(hdr.buffer).setUint32(0, frame.length);
    this.counter.tcp += 4 + frame.length;
    this.sock.write(concat([hdr, frame], 4 + frame.length));
  }

  receive(timeoutMs: number): Promise<Uint8Array> {
    if (this.frames.length) return Promise.resolve(this.take(this.frames.shift()!));
    if (this.error) return Promise.reject(this.error);
    // Waiting on the peer: at the listener's cap this stream may make room for a newcomer (a
    // replayed opening held 128 streams waiting for the rest of an exchange, and joins failed).
    this.setBusy(false);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`stream to ${this.remoteAddr}: no frame within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = {
        resolve: (b: Uint8Array) => (clearTimeout(t), resolve(b)),
        reject: (e: Error) => (clearTimeout(t), reject(e)),
      };
      this.waiters.push(waiter);
    });
  }

  close(): void {
    // Our FIN, then the descriptor: a peer that never closes its side must not hold it open,
    // nor go on filling our buffers meanwhile.
    this.closed = true;
    this.fail(new StreamClosedError(`stream to ${this.remoteAddr} closed`));
    this.sock.end(() => this.sock.destroy());
  }

  /** Close the socket at once. */
  destroy(): void {
    this.sock.destroy();
  }
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Why gossip cannot listen on `host:port`, worded as the RPC, metrics and HTTP listeners word it
 * (before: a bare "cannot bind UDP …: bind EADDRINUSE", without the flag to change).
 */
function bindError(
  proto: "UDP" | "TCP",
  host: string,
  port: number,
  e: Error & { code?: string },
): Error {
  const why = e.code === "EADDRINUSE"
    ? `port ${port} is already in use (another agent?); choose another with --gossip-port ` +
      `(0 picks a free one)`
    : e.code === "EADDRNOTAVAIL"
    ? `${host} is not an address of this machine; check --bind`
    : e.message;
  return new Error(`cannot listen for gossip on ${proto} ${joinHostPort(host, port)}: ${why}`);
}

/** How {@linkcode UdpTransport.listen} opens its sockets (tests put a port in the way). */
export interface PortBinders {
  /** A TCP server listening on `port` of `host` (0: the kernel picks). */
  listenTcp(host: string, port: number): Promise<net.Server>;
  /** A UDP socket bound to `port` of `host`. */
  bindUdp(host: string, port: number): Promise<dgram.Socket>;
}

/** A UDP socket bound to `port` on `host` (the socket's own error, if not). */
function bindUdp(host: string, port: number): Promise<dgram.Socket> {
  const udp = dgram.createSocket({ type: host.includes(":") ? "udp6" : "udp4" });
  return new Promise<dgram.Socket>((resolve, reject) => {
    const failed = (e: Error) => {
      udp.close();
      reject(e);
    };
    udp.once("error", failed);
    udp.bind(port, host, () => {
      udp.off("error", failed);
      resolve(udp);
    });
  });
}

/** A TCP server listening on `port` on `host` (the server's own error, if not). */
function listenTcp(host: string, port: number): Promise<net.Server> {
  const tcp = net.createServer();
  return new Promise<net.Server>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(port, host, () => {
      tcp.off("error", reject);
      resolve(tcp);
    });
  });
}

/** The operating system's sockets. */
export const systemPorts: PortBinders = { listenTcp, bindUdp };

/** Options of the real transport. */
export interface UdpTransportOptions {
  /** Address to bind; 127.0.0.1 by default — never all interfaces unless asked. */
  bindAddr?: string;
  /** UDP and TCP port; 0 picks a free one (the same for both). Default 7946. */
  port?: number;
  /** Address to advertise when it differs from the bind address (NAT, 0.0.0.0 bind). */
  advertiseAddr?: string;
  /** Bounds of accepted streams; default {@linkcode GOSSIP_STREAM_LIMITS}. */
  streamLimits?: Partial<ConnectionLimits>;
  /** Bytes the accepted streams may hold unread together; default INBOUND_BUFFER_BUDGET. */
  streamBufferBytes?: number;
  /** How often the TCP listener checks it still accepts (ms; 0: never); default 5 s. */
  probeEveryMs?: number;
  /** Where the TCP listener's warnings go (an agent: its logger); default stderr as JSON. */
  warn?: Warn;
}

/**
 * UDP datagrams + TCP streams on one port.
 *
 * @example
 * ```ts
 * const t = await UdpTransport.listen({ bindAddr: "127.0.0.1", port: 7946 });
 * ```
 */
export class UdpTransport implements Transport {
  readonly clock: Clock = systemClock;
  readonly bytesSent = { udp: 0, tcp: 0 };
  /** Bytes the accepted streams hold unread, together (INBOUND_BUFFER_BUDGET). */
  readonly inboundBudget: BufferBudget;
  private packetHandler: (from: string, b: Uint8Array) => void = () => {};
  private streamHandler: (s: Stream) => void = (s) => s.close();
  private readonly sockets = new Set<net.Socket>();
  /** The TCP listener's bounds and its accept watch. */
  private readonly guarded: GuardedListener;

  private constructor(
    private readonly udp: dgram.Socket,
    private readonly tcp: net.Server,
    readonly addr: string,
    opts: UdpTransportOptions = {},
  ) {
    this.inboundBudget = { used: 0, max: opts.streamBufferBytes ?? INBOUND_BUFFER_BUDGET };
    udp.on("message", (msg: Uint8Array, rinfo: { address: string; port: number }) => {
      this.packetHandler(joinHostPort(rinfo.address, rinfo.port), new Uint8Array(msg));
    });
    udp.on("error", () => {});
    this.guarded = guardListener(tcp, {
      name: "gossip TCP listener",
      limits: { ...GOSSIP_STREAM_LIMITS, ...opts.streamLimits },
      probeEveryMs: opts.probeEveryMs,
      warn: opts.warn,
      serve: (sock, activity) => {
        const stream = new SocketStream(
          sock,
          joinHostPort(sock.remoteAddress ?? "?", sock.remotePort ?? 0),
          this.bytesSent,
          activity,
          this.inboundBudget,
        );
        this.track(sock);
        this.streamHandler(stream);
      },
    });
  }

  private track(sock: net.Socket) {
    this.sockets.add(sock);
    sock.on("close", () => this.sockets.delete(sock));
    sock.on("error", () => {});
  }

  /**
   * Bind UDP and TCP on the same port. A port in use, or an address not of this machine, is
   * refused in the words the agent's other listeners use (naming --gossip-port or --bind).
   */
  static async listen(
    opts: UdpTransportOptions = {},
    sockets: PortBinders = systemPorts,
  ): Promise<UdpTransport> {
    const { listenTcp, bindUdp } = sockets;
    const bindAddr = opts.bindAddr ?? "127.0.0.1";
    const host = opts.advertiseAddr ?? bindAddr;
    const port = opts.port ?? 7946;
    if (port !== 0) {
      const udp = await bindUdp(bindAddr, port).catch((e) => {
        throw bindError("UDP", bindAddr, port, e);
      });
      const tcp = await listenTcp(bindAddr, port).catch((e) => {
        udp.close();
        throw bindError("TCP", bindAddr, port, e);
      });
      return new UdpTransport(udp, tcp, joinHostPort(host, port), opts);
    }
    // A free port for both: TCP picks first. The other way round, a UDP port from the ephemeral
    // range often has a TCP twin that some client connection holds or left in TIME_WAIT, which
    // blocks a listener even with SO_REUSEADDR (a busy test machine had ~10k of them, and ten
    // tries in a row failed); UDP ports are few, so the TCP port's twin is nearly always free.
    for (let attempt = 0; attempt < 20; attempt++) {
      const tcp = await listenTcp(bindAddr, 0).catch((e) => {
        throw bindError("TCP", bindAddr, 0, e);
      });
      const picked = (tcp.address() as net.AddressInfo).port;
      const udp = await bindUdp(bindAddr, picked).catch((e: Error & { code?: string }) => {
        tcp.close();
        if (e.code === "EADDRINUSE") return undefined; // its UDP twin is taken: try another
        throw bindError("UDP", bindAddr, picked, e);
      });
      if (udp) return new UdpTransport(udp, tcp, joinHostPort(host, picked), opts);
    }
    throw new Error(`cannot find a free port with both UDP and TCP on ${bindAddr}`);
  }

  sendPacket(addr: string, bytes: Uint8Array): void {
    try {
      const { host, port } = splitHostPort(addr);
      this.bytesSent.udp += bytes.length;
      this.udp.send(bytes, port, host, () => {});
    } catch {
      // unsendable address or closed socket: a lost datagram, as UDP would have it
    }
  }

  onPacket(handler: (from: string, bytes: Uint8Array) => void): void {
    this.packetHandler = handler;
  }

  dialStream(addr: string, timeoutMs: number): Promise<Stream> {
    return new Promise((resolve, reject) => {
      let host: string, port: number;
      try {
        ({ host, port } = splitHostPort(addr));
      } catch (e) {
        return reject(e);
      }
      const sock = net.connect({ host, port });
      this.track(sock);
      const t = setTimeout(() => {
        sock.destroy();
        reject(new Error(`connect to ${addr} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      sock.once("connect", () => {
        clearTimeout(t);
        resolve(new SocketStream(sock, addr, this.bytesSent));
      });
      sock.once("error", (e: Error) => {
        clearTimeout(t);
        reject(new Error(`connect to ${addr}: ${e.message}`));
      });
    });
  }

  onStream(handler: (stream: Stream) => void): void {
    this.streamHandler = handler;
  }

  async close(): Promise<void> {
    this.guarded.stop();
    for (const s of this.sockets) s.destroy();
    await Promise.all([
      new Promise<void>((r) => this.tcp.close(() => r())),
      new Promise<void>((r) => {
        try {
          this.udp.close(() => r());
        } catch {
          r();
        }
      }),
    ]);
  }
}

/** Loss and delay applied to outgoing datagrams (and delay to stream frames). */
export interface Impairment {
  /** Probability in [0, 1] that a datagram is dropped. */
  loss: number;
  /** Mean one-way extra delay, ms. */
  delayMs: number;
  /** Uniform ± jitter around the delay, ms. */
  jitterMs: number;
}

/**
 * Wraps a transport with userspace loss and delay — a stand-in for `tc netem` on kernels
 * without `sch_netem`. Only outgoing traffic is impaired, as netem on an egress qdisc would.
 */
export class ImpairedTransport implements Transport {
  /** @param inner the real transport @param imp impairment @param rng randomness */
  constructor(
    private readonly inner: Transport,
    private readonly imp: Impairment,
    private readonly rng: Rng = systemRng,
  ) {}
  get addr(): string {
    return this.inner.addr;
  }
  get clock(): Clock {
    return this.inner.clock;
  }
  get bytesSent(): { udp: number; tcp: number } {
    return this.inner.bytesSent;
  }
  private delay(): number {
    return Math.max(0, this.imp.delayMs + (this.rng.next() * 2 - 1) * this.imp.jitterMs);
  }
  sendPacket(addr: string, bytes: Uint8Array): void {
    if (this.rng.next() < this.imp.loss) return;
    const d = this.delay();
    if (d <= 0) this.inner.sendPacket(addr, bytes);
    else this.clock.setTimeout(() => this.inner.sendPacket(addr, bytes), d);
  }
  onPacket(handler: (from: string, bytes: Uint8Array) => void): void {
    this.inner.onPacket(handler);
  }
  /**
   * Delay a stream's frames and its close, in order: TCP never reorders, but independent
   * jittered timers let a close overtake the reply before it (the peer then saw "stream
   * closed"), failing about half the push-pulls on a 60 ± 55 ms link.
   */
  private wrap(s: Stream): Stream {
    let tail = Promise.resolve();
    const later = (op: () => void) => {
      const due = this.clock.now() + this.delay();
      tail = tail.then(() =>
        new Promise<void>((r) =>
          this.clock.setTimeout(() => (op(), r()), Math.max(0, due - this.clock.now()))
        )
      );
    };
    return {
      remoteAddr: s.remoteAddr,
      send: (f) => later(() => s.send(f)),
      receive: (t) => s.receive(t),
      close: () => later(() => s.close()),
    };
  }
  async dialStream(addr: string, timeoutMs: number): Promise<Stream> {
    return this.wrap(await this.inner.dialStream(addr, timeoutMs));
  }
  onStream(handler: (stream: Stream) => void): void {
    this.inner.onStream((s) => handler(this.wrap(s)));
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
