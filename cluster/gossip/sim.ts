/**
 * A deterministic simulated network for 100–1000 members in one process: a virtual clock driven
 * by an event queue, per-link latency/jitter/loss, partitions and crashes. The real protocol
 * code runs on it unchanged (it only sees {@linkcode Transport} and {@linkcode Clock}).
 * Same seed, same run.
 *
 * @module
 */
import { type Clock, type Rng, seededRng, type TimerHandle } from "./clock.ts";
import { type Stream, StreamClosedError, type Transport } from "./transport.ts";

interface Ev {
  t: number;
  seq: number;
  fn: (() => void) | null;
}

/** Binary min-heap of events by (time, insertion order). */
class EventQueue {
  private h: Ev[] = [];
  get size(): number {
    return this.h.length;
  }
  private less(a: Ev, b: Ev) {
    return a.t < b.t || (a.t === b.t && a.seq < b.seq);
  }
  push(e: Ev) {
    const h = this.h;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }
  peek(): Ev | undefined {
    return this.h[0];
  }
  pop(): Ev | undefined {
    const h = this.h;
    if (h.length === 0) return undefined;
    const top = h[0];
    const last = h.pop()!;
    if (h.length) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l], h[m])) m = l;
        if (r < h.length && this.less(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

/** The virtual clock; time advances only as the network runs events. */
export class SimClock implements Clock {
  private t = 0;
  private seq = 0;
  /** @internal */
  readonly events = new EventQueue();

  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const e: Ev = { t: this.t + Math.max(0, ms), seq: this.seq++, fn };
    this.events.push(e);
    return e;
  }
  clearTimeout(h: TimerHandle): void {
    if (h && typeof h === "object" && "fn" in h) (h as Ev).fn = null;
  }
  /** @internal advance to the next event and run it; false when none is due by `until`. */
  step(until: number): boolean {
    const e = this.events.peek();
    if (!e || e.t > until) return false;
    this.events.pop();
    this.t = e.t;
    e.fn?.();
    return true;
  }
  /** @internal */
  advanceTo(t: number) {
    if (t > this.t) this.t = t;
  }
}

/** Latency, jitter and loss of a link (one direction). */
export interface LinkProfile {
  /** One-way latency, ms. */
  latencyMs: number;
  /** Uniform ± jitter, ms. */
  jitterMs: number;
  /**
   * Datagram loss probability in [0, 1]. Streams are reliable, but each loss on their path costs
   * a retransmission timeout, as with TCP.
   */
  loss: number;
}

/** Simulation options. */
export interface SimOptions {
  /** RNG seed; the same seed replays the same run. */
  seed?: number;
  /** Default link profile (LAN-like: 0.5 ms ± 0.2 ms, no loss). */
  link?: Partial<LinkProfile>;
}

/**
 * The simulated network.
 *
 * @example
 * ```ts
 * const net = new SimNetwork({ seed: 1, link: { loss: 0.1 } });
 * const t = net.createTransport();
 * const ml = Memberlist.create(lanConfig({ nodeId: "n0", rng: net.rng }), t);
 * await net.run(10_000); // ten simulated seconds
 * ```
 */
export class SimNetwork {
  /** The virtual clock shared by all members. */
  readonly clock = new SimClock();
  /** Seeded randomness for the network and (by convention) the members. */
  readonly rng: Rng;
  private link: LinkProfile;
  private readonly nodes = new Map<string, SimTransport>();
  private readonly links = new Map<string, LinkProfile>();
  private group: Map<string, number> | null = null;
  private nextIp = 1;
  /** Set when stream activity may have left promise continuations to run. */
  asyncPending = false;

  /** @param opts seed and default link */
  constructor(opts: SimOptions = {}) {
    this.rng = seededRng(opts.seed ?? 1);
    this.link = { latencyMs: 0.5, jitterMs: 0.2, loss: 0, ...opts.link };
  }

  /** Virtual now, ms. */
  now(): number {
    return this.clock.now();
  }

  /** A new endpoint; addresses are 10.x.y.z:7946 unless given. */
  createTransport(addr?: string): SimTransport {
    if (!addr) {
      const n = this.nextIp++;
      addr = `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}:7946`;
    }
    if (this.nodes.get(addr)?.up) throw new Error(`simulated address ${addr} is in use`);
    const t = new SimTransport(this, addr);
    this.nodes.set(addr, t);
    return t;
  }

  /** Change the default link profile (e.g. add loss mid-run). */
  setDefaultLink(p: Partial<LinkProfile>): void {
    this.link = { ...this.link, ...p };
  }

  /** Override the link from `a` to `b` (one direction). */
  setLink(a: string, b: string, p: Partial<LinkProfile>): void {
    this.links.set(`${a}|${b}`, { ...this.link, ...p });
  }

  /** Cut the network into groups; traffic between groups is dropped. Unlisted nodes: group 0. */
  partition(...groups: string[][]): void {
    this.group = new Map();
    groups.forEach((g, i) => g.forEach((a) => this.group!.set(a, i + 1)));
  }

  /** Remove the partition. */
  heal(): void {
    this.group = null;
  }

  /** Kill -9: the endpoint stops sending and receiving at once, without a word. */
  crash(addr: string): void {
    const t = this.nodes.get(addr);
    if (t) t.up = false;
  }

  /** Total bytes sent by all endpoints (UDP, TCP). */
  bytesSent(): { udp: number; tcp: number } {
    let udp = 0, tcp = 0;
    for (const t of this.nodes.values()) {
      udp += t.bytesSent.udp;
      tcp += t.bytesSent.tcp;
    }
    return { udp, tcp };
  }

  /** @internal may a datagram/frame go from a to b now? */
  reachable(a: string, b: string): boolean {
    const tb = this.nodes.get(b);
    if (!tb || !tb.up) return false;
    if (this.group && (this.group.get(a) ?? 0) !== (this.group.get(b) ?? 0)) return false;
    return true;
  }

  /** @internal one-way delay from a to b; null when lost. */
  delay(a: string, b: string, lossy: boolean): number | null {
    const p = this.links.get(`${a}|${b}`) ?? this.link;
    if (lossy && p.loss > 0 && this.rng.next() < p.loss) return null;
    return Math.max(0.01, p.latencyMs + (this.rng.next() * 2 - 1) * p.jitterMs);
  }

  /**
   * @internal one-way delay of a TCP segment from a to b: never lost, but each loss on the link
   * costs a retransmission timeout (`rtoMs`: Linux's initial 1 s for SYNs, ≥ 200 ms after).
   */
  streamDelay(a: string, b: string, rtoMs: number): number {
    const p = this.links.get(`${a}|${b}`) ?? this.link;
    let d = this.delay(a, b, false)!;
    let rto = rtoMs;
    while (p.loss > 0 && this.rng.next() < p.loss && d < 60_000) {
      d += rto;
      rto *= 2;
    }
    return d;
  }

  /** @internal */
  endpoint(addr: string): SimTransport | undefined {
    return this.nodes.get(addr);
  }

  /** Run the simulation for `ms` of virtual time. */
  async run(ms: number): Promise<void> {
    const until = this.clock.now() + ms;
    while (this.clock.step(until)) {
      if (this.asyncPending) await this.drain();
    }
    this.clock.advanceTo(until);
    await this.drain();
  }

  /**
   * Run until `pred()` holds (checked every `checkEveryMs`) or `maxMs` passes.
   * Returns the virtual time it took, or null on timeout.
   */
  async runUntil(pred: () => boolean, maxMs: number, checkEveryMs = 10): Promise<number | null> {
    const start = this.clock.now();
    while (this.clock.now() - start < maxMs) {
      if (pred()) return this.clock.now() - start;
      await this.run(checkEveryMs);
    }
    return pred() ? this.clock.now() - start : null;
  }

  /**
   * Drive the simulation until `p` settles (an API call such as `join` that waits on simulated
   * network traffic), at most `maxMs` of virtual time; returns its value or rethrows its error.
   */
  async settle<T>(p: Promise<T>, maxMs = 60_000): Promise<T> {
    let done = false;
    const tracked = p.finally(() => (done = true));
    tracked.catch(() => {});
    await this.drain();
    const start = this.clock.now();
    while (!done && this.clock.now() - start < maxMs) await this.run(1);
    if (!done) throw new Error(`simulated operation still pending after ${maxMs} ms`);
    return await tracked;
  }

  private async drain() {
    this.asyncPending = false;
    // Let promise continuations (stream handlers) run at the current virtual time.
    for (let i = 0; i < 16; i++) await null;
  }
}

/** A simulated endpoint. */
export class SimTransport implements Transport {
  /** False after a crash or close. */
  up = true;
  readonly bytesSent = { udp: 0, tcp: 0 };
  /** Bytes received (UDP). */
  bytesReceived = 0;
  /** @internal */
  packetHandler: (from: string, b: Uint8Array) => void = () => {};
  /** @internal */
  streamHandler: ((s: Stream) => void) | null = null;

  /** @param net the network @param addr this endpoint's address */
  constructor(private readonly net: SimNetwork, readonly addr: string) {}

  get clock(): Clock {
    return this.net.clock;
  }

  sendPacket(addr: string, bytes: Uint8Array): void {
    if (!this.up) return;
    this.bytesSent.udp += bytes.length;
    const d = this.net.delay(this.addr, addr, true);
    if (d === null || !this.net.reachable(this.addr, addr)) return;
    const from = this.addr;
    this.net.clock.setTimeout(() => {
      const t = this.net.endpoint(addr);
      if (t && t.up && this.net.reachable(from, addr)) {
        t.bytesReceived += bytes.length;
        t.packetHandler(from, bytes);
      }
    }, d);
  }

  onPacket(handler: (from: string, bytes: Uint8Array) => void): void {
    this.packetHandler = handler;
  }

  dialStream(addr: string, timeoutMs: number): Promise<Stream> {
    return new Promise((resolve, reject) => {
      const fail = () =>
        this.net.clock.setTimeout(() => {
          this.net.asyncPending = true;
          reject(new Error(`connect to ${addr} timed out after ${timeoutMs} ms`));
        }, timeoutMs);
      if (!this.up || !this.net.reachable(this.addr, addr)) return void fail();
      const rtt = this.net.streamDelay(this.addr, addr, 1000) +
        this.net.streamDelay(addr, this.addr, 1000);
      this.net.clock.setTimeout(() => {
        const peer = this.net.endpoint(addr);
        if (
          !this.up || !peer || !peer.up || !peer.streamHandler ||
          !this.net.reachable(this.addr, addr)
        ) {
          return void fail();
        }
        const a = new SimStream(this.net, this, addr);
        const b = new SimStream(this.net, peer, this.addr);
        a.peer = b;
        b.peer = a;
        this.net.asyncPending = true;
        peer.streamHandler(b);
        resolve(a);
      }, rtt);
    });
  }

  onStream(handler: (stream: Stream) => void): void {
    this.streamHandler = handler;
  }

  close(): Promise<void> {
    this.up = false;
    return Promise.resolve();
  }
}

class SimStream implements Stream {
  peer!: SimStream;
  private frames: Uint8Array[] = [];
  private waiters: {
    resolve: (b: Uint8Array) => void;
    reject: (e: Error) => void;
    timer: TimerHandle;
  }[] = [];
  private closed = false;

  constructor(
    private readonly net: SimNetwork,
    private readonly owner: SimTransport,
    readonly remoteAddr: string,
  ) {}

  send(frame: Uint8Array): void {
    if (this.closed || !this.owner.up) return;
    this.owner.bytesSent.tcp += frame.length + 4;
    const d = this.net.streamDelay(this.owner.addr, this.remoteAddr, 200);
    const peer = this.peer;
    this.net.clock.setTimeout(() => {
      if (this.net.reachable(this.owner.addr, this.remoteAddr)) peer.deliver(frame);
    }, d);
  }

  private deliver(frame: Uint8Array) {
    if (this.closed) return;
    this.net.asyncPending = true;
    const w = this.waiters.shift();
    if (w) {
      this.net.clock.clearTimeout(w.timer);
      w.resolve(frame);
    } else this.frames.push(frame);
  }

  receive(timeoutMs: number): Promise<Uint8Array> {
    if (this.frames.length) return Promise.resolve(this.frames.shift()!);
    if (this.closed) return Promise.reject(new StreamClosedError("stream closed"));
    return new Promise((resolve, reject) => {
      const w = {
        resolve,
        reject,
        timer: this.net.clock.setTimeout(() => {
          this.waiters = this.waiters.filter((x) => x !== w);
          this.net.asyncPending = true;
          reject(new Error(`stream to ${this.remoteAddr}: no frame within ${timeoutMs} ms`));
        }, timeoutMs),
      };
      this.waiters.push(w);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.waiters.splice(0)) {
      this.net.clock.clearTimeout(w.timer);
      w.reject(new StreamClosedError("stream closed"));
    }
    this.net.asyncPending = true;
  }
}
