/**
 * The protocol core: SWIM probing (direct, indirect through k members, TCP fallback), the
 * suspicion state machine with incarnations and refutation, dissemination of news on probes and
 * gossip ticks, and push-pull anti-entropy. It touches the world only through a
 * {@linkcode Transport} and the transport's {@linkcode Clock}, and takes randomness from
 * `config.rng`, so the same code runs on UDP and in the simulator.
 *
 * @module
 */
import { type Clock, shuffle, type TimerHandle } from "./clock.ts";
import {
  type AliveMsg,
  COMPOUND_HEADER,
  COMPOUND_PART_OVERHEAD,
  type DeadMsg,
  decode,
  type DeltaMsg,
  type DigestEntry,
  type DigestMsg,
  encode,
  type IndirectPingMsg,
  type Message,
  type NodeStatus,
  type PingMsg,
  type PushNodeState,
  type PushPullMsg,
  type SuspectMsg,
} from "./codec.ts";
import { type Config, pushPullScale } from "./config.ts";
import { Awareness } from "./awareness.ts";
import { TransmitLimitedQueue } from "./queue.ts";
import { Suspicion, suspicionTimeout } from "./suspicion.ts";
import { decodeMetadata, type NodeMetadata } from "./metadata.ts";
import { type DropReason, dropReason, open, pack, packetBudget, seal, unpack } from "./net.ts";
import type { Stream, Transport } from "./transport.ts";

/** A member as the public API shows it. */
export interface Member {
  /** Node id. */
  id: string;
  /** Gossip address `host:port`. */
  addr: string;
  /** Current state. */
  status: NodeStatus;
  /** Incarnation: bumped by the member itself to refute suspicion or publish new metadata. */
  incarnation: number;
  /** Decoded metadata, or null if the bytes do not decode (a newer, unknown format). */
  meta: NodeMetadata | null;
  /** The raw metadata bytes. */
  metaBytes: Uint8Array;
}

/** Kinds of membership events. */
export type EventType = "join" | "update" | "suspect" | "alive" | "dead" | "leave" | "conflict";

/** One membership event. */
export interface MemberEvent {
  /** What happened. */
  type: EventType;
  /** The member, after the change. */
  member: Member;
  /** `clock.now()` when it happened. */
  at: number;
}

/** A joiner's id is already used by a live member at another address. */
export class DuplicateNodeIdError extends Error {
  /** @param message who holds the id, and what to do */
  constructor(message: string) {
    super(message);
    this.name = "DuplicateNodeIdError";
  }
}

/** Counters, for tests, metrics and the benchmark. */
export interface Stats {
  /** Dropped incoming packets/streams per reason. */
  droppedPackets: Record<DropReason, number>;
  /** Datagrams sent / received. */
  packetsSent: number;
  /** Datagrams received. */
  packetsReceived: number;
  /** Probes started / that ended in suspicion. */
  probes: number;
  /** Probes that got no ack at all. */
  failedProbes: number;
  /** Probes rescued by the TCP fallback. */
  tcpFallbackAcks: number;
  /** Push-pull exchanges completed / failed. */
  pushPulls: number;
  /** Push-pull exchanges that failed. */
  pushPullFailures: number;
  /** Smoothed round trip of acked probes, ms (SRTT, α = 1/8 as in TCP); 0 before the first. */
  probeRttMs: number;
}

interface NodeState {
  id: string;
  addr: string;
  incarnation: number;
  status: NodeStatus;
  meta: Uint8Array;
  decoded?: NodeMetadata | null;
  stateChange: number;
}

interface AckHandler {
  ack(): void;
  nack(): void;
}

/** FNV-1a over address and metadata: a change that kept the incarnation still shows. */
function versionHash(n: { addr: string; meta: Uint8Array }): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < n.addr.length; i++) h = Math.imul(h ^ n.addr.charCodeAt(i), 0x01000193);
  for (let i = 0; i < n.meta.length; i++) h = Math.imul(h ^ n.meta[i], 0x01000193);
  return h >>> 0;
}

function sameVersion(n: NodeState, e: DigestEntry): boolean {
  return n.incarnation === e.incarnation && n.status === e.status && versionHash(n) === e.hash;
}

function toPush(n: NodeState): PushNodeState {
  return { id: n.id, addr: n.addr, incarnation: n.incarnation, status: n.status, meta: n.meta };
}

function rank(m: Message): number {
  return m.type === "alive" || m.type === "suspect" || m.type === "dead" ? 0 : 1;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The membership state machine of one member. Use it through `Memberlist`. */
export class GossipState {
  readonly nodes = new Map<string, NodeState>();
  readonly queue: TransmitLimitedQueue;
  readonly awareness: Awareness;
  readonly clock: Clock;
  readonly stats: Stats = {
    droppedPackets: {
      decrypt: 0,
      malformed: 0,
      misdirected: 0,
      unexpected: 0,
      stream: 0,
      internal: 0,
    },
    packetsSent: 0,
    packetsReceived: 0,
    probes: 0,
    failedProbes: 0,
    tcpFallbackAcks: 0,
    pushPulls: 0,
    pushPullFailures: 0,
    probeRttMs: 0,
  };
  /** Set by a graceful leave: we no longer refute our own death. */
  leaving = false;
  private stopped = false;
  private probeOrder: string[] = [];
  private probeIndex = 0;
  private suspicions = new Map<string, Suspicion>();
  private departed = new Map<string, { addr: string; since: number }>();
  private nagging = new Set<string>();
  private lastReply = new Map<string, number>();
  private ackHandlers = new Map<number, AckHandler>();
  private seq = 0;
  private timers = new Set<TimerHandle>();

  /**
   * @param cfg configuration
   * @param transport network
   * @param emit called for every membership event
   */
  constructor(
    readonly cfg: Config,
    readonly transport: Transport,
    private readonly emit: (e: MemberEvent) => void,
    private readonly wants: (type: EventType) => boolean = () => true,
  ) {
    this.clock = transport.clock;
    this.awareness = new Awareness(cfg.awarenessMaxMultiplier);
    this.queue = new TransmitLimitedQueue(cfg.retransmitMult, () => this.nodes.size);
  }

  /** Our node id. */
  get id(): string {
    return this.cfg.nodeId;
  }

  /** Our own state record. */
  get local(): NodeState {
    return this.nodes.get(this.id)!;
  }

  /** Register handlers, announce ourselves, start the probe, gossip and push-pull loops. */
  start(meta: Uint8Array): void {
    this.transport.onPacket((from, b) => this.receivePacket(from, b));
    this.transport.onStream((s) => void this.handleStream(s));
    this.aliveNode({
      type: "alive",
      incarnation: 0,
      node: this.id,
      addr: this.transport.addr,
      meta,
    }, true);
    const r = () => this.cfg.rng.next();
    // Random stagger so members started together do not probe and gossip in lock-step.
    this.after(r() * this.cfg.probeInterval, () => this.probeTick());
    this.after(r() * this.cfg.gossipInterval, () => this.gossipTick());
    this.after(
      r() * this.cfg.pushPullInterval + this.cfg.pushPullInterval / 2,
      () => this.pushPullTick(),
    );
    this.after(
      r() * this.cfg.reconnectInterval + this.cfg.reconnectInterval,
      () => this.reconnectTick(),
    );
  }

  /** Stop every loop and timer. */
  stop(): void {
    this.stopped = true;
    for (const t of this.timers) this.clock.clearTimeout(t);
    this.timers.clear();
    for (const s of this.suspicions.values()) s.stop();
    this.suspicions.clear();
    this.ackHandlers.clear();
  }

  private after(ms: number, fn: () => void): TimerHandle {
    const h: TimerHandle = this.clock.setTimeout(() => {
      this.timers.delete(h);
      if (!this.stopped) fn();
    }, ms);
    this.timers.add(h);
    return h;
  }

  private cancel(h: TimerHandle) {
    this.clock.clearTimeout(h);
    this.timers.delete(h);
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) >>> 0;
    return this.seq;
  }

  /** Snapshot of one member. */
  member(s: NodeState): Member {
    if (s.decoded === undefined) {
      try {
        s.decoded = decodeMetadata(s.meta);
      } catch {
        s.decoded = null;
      }
    }
    return {
      id: s.id,
      addr: s.addr,
      status: s.status,
      incarnation: s.incarnation,
      meta: s.decoded,
      metaBytes: s.meta,
    };
  }

  private event(type: EventType, s: NodeState) {
    if (s.id === this.id && type !== "conflict") return;
    // Building a Member decodes metadata: skip it when nobody listens (N² decodes on formation).
    if (!this.wants(type)) return;
    this.emit({ type, member: this.member(s), at: this.clock.now() });
  }

  // ---------------------------------------------------------------- sending

  private sendRaw(addr: string, plain: Uint8Array) {
    this.stats.packetsSent++;
    this.transport.sendPacket(addr, seal(this.cfg.keyring, plain));
  }

  /** Send messages to `addr`, filling the rest of the datagram with queued broadcasts. */
  sendMsgs(addr: string, msgs: Uint8Array[]): void {
    const budget = packetBudget(this.cfg.maxPacketSize, this.cfg.keyring);
    let used = COMPOUND_HEADER;
    for (const m of msgs) used += m.length + COMPOUND_PART_OVERHEAD;
    const extra = this.queue.getBroadcasts(COMPOUND_PART_OVERHEAD, budget - used);
    this.sendRaw(addr, pack(extra.length ? msgs.concat(extra) : msgs));
  }

  private broadcast(key: string, m: Message, finished?: () => void) {
    this.queue.queue({ key, msg: encode(m), finished });
  }

  // ---------------------------------------------------------------- receiving

  /** The receive loop's body: never throws; bad packets are counted and dropped. */
  receivePacket(from: string, raw: Uint8Array): void {
    if (this.stopped) return;
    this.stats.packetsReceived++;
    let msgs: Message[];
    try {
      msgs = unpack(open(this.cfg.keyring, raw));
    } catch (e) {
      this.drop(dropReason(e), e);
      return;
    }
    // Membership news first: a suspicion riding on a ping must be refuted before the ack goes
    // out, so that the refutation rides back on the ack to the very member that suspects us.
    if (msgs.length > 1) msgs.sort((a, b) => rank(a) - rank(b));
    for (const m of msgs) {
      try {
        this.handle(from, m);
      } catch (e) {
        this.drop("internal", e);
      }
    }
  }

  private drop(reason: DropReason, e?: unknown) {
    this.stats.droppedPackets[reason]++;
    if (reason === "internal") {
      this.cfg.logger?.("warn", "gossip handler failed", { error: String(e) });
    }
  }

  private handle(from: string, m: Message) {
    switch (m.type) {
      case "ping":
        if (m.target !== this.id) return this.drop("misdirected");
        this.sendMsgs(from, [encode({ type: "ack", seq: m.seq })]);
        return;
      case "indirectPing":
        return this.relayPing(from, m);
      case "ack":
        this.ackHandlers.get(m.seq)?.ack();
        return;
      case "nack":
        this.ackHandlers.get(m.seq)?.nack();
        return;
      case "suspect":
        return this.suspectNode(m);
      case "alive":
        return this.aliveNode(m, false);
      case "dead":
        return this.deadNode(m);
      case "user":
        return; // application broadcasts: reserved
      default:
        return this.drop("unexpected");
    }
  }

  // ---------------------------------------------------------------- probing

  private probeTick() {
    const target = this.nextProbeTarget();
    if (target) this.probeNode(target);
    this.after(this.awareness.scaleTimeout(this.cfg.probeInterval), () => this.probeTick());
  }

  private nextProbeTarget(): NodeState | null {
    for (let tries = 0; tries <= this.probeOrder.length + 1; tries++) {
      if (this.probeIndex >= this.probeOrder.length) {
        this.resetProbeOrder();
        if (this.probeOrder.length === 0) return null;
      }
      const s = this.nodes.get(this.probeOrder[this.probeIndex++]);
      if (!s || s.id === this.id || s.status === "dead" || s.status === "left") continue;
      return s;
    }
    return null;
  }

  /**
   * End of a round: reap long-dead members, reshuffle (SWIM's shuffled round-robin). Dead and
   * left members are remembered for reconnect attempts until `reconnectTimeout`.
   */
  private resetProbeOrder() {
    const now = this.clock.now();
    for (const [id, s] of this.nodes) {
      if (
        (s.status === "dead" || s.status === "left") &&
        now - s.stateChange > this.cfg.gossipToTheDeadTime
      ) {
        this.nodes.delete(id);
        this.departed.set(id, { addr: s.addr, since: s.stateChange });
      }
    }
    for (const [id, d] of this.departed) {
      if (now - d.since > this.cfg.reconnectTimeout || this.nodes.has(id)) this.departed.delete(id);
    }
    this.probeOrder = shuffle([...this.nodes.keys()], this.cfg.rng);
    this.probeIndex = 0;
  }

  private probeNode(target: NodeState) {
    this.stats.probes++;
    const seq = this.nextSeq();
    const timeout = this.awareness.scaleTimeout(this.cfg.probeTimeout);
    const interval = this.awareness.scaleTimeout(this.cfg.probeInterval);
    let done = false, nacks = 0, expectedNacks = 0;
    const sentAt = this.clock.now();
    const onAck = () => {
      if (done) return;
      done = true;
      this.awareness.applyDelta(-1);
      const rtt = this.clock.now() - sentAt;
      const srtt = this.stats.probeRttMs;
      this.stats.probeRttMs = srtt === 0 ? rtt : srtt + (rtt - srtt) / 8;
    };
    this.ackHandlers.set(seq, { ack: onAck, nack: () => nacks++ });
    const msgs = [
      encode({
        type: "ping",
        seq,
        target: target.id,
        sourceId: this.id,
        sourceAddr: this.transport.addr,
      }),
    ];
    // A suspect target gets the accusation with the ping, so it can refute at once.
    if (target.status === "suspect") {
      msgs.push(
        encode({
          type: "suspect",
          incarnation: target.incarnation,
          node: target.id,
          from: this.id,
        }),
      );
    }
    this.sendMsgs(target.addr, msgs);

    this.after(timeout, () => {
      if (done) return;
      const relays = this.kRandom(
        this.cfg.indirectChecks,
        (n) => n.id !== this.id && n.id !== target.id && n.status === "alive",
      );
      expectedNacks = relays.length;
      const ind = encode({
        type: "indirectPing",
        seq,
        target: target.id,
        targetAddr: target.addr,
        sourceId: this.id,
        sourceAddr: this.transport.addr,
        nack: true,
      });
      for (const r of relays) this.sendMsgs(r.addr, [ind]);
      if (!this.cfg.disableTcpPings) {
        void this.tcpPing(target, interval - timeout).then((ok) => {
          if (ok && !done) {
            this.stats.tcpFallbackAcks++;
            onAck();
          }
        });
      }
    });

    this.after(interval, () => {
      this.ackHandlers.delete(seq);
      if (done) return;
      done = true;
      this.stats.failedProbes++;
      // Lifeguard: relays that neither acked nor nacked suggest *we* are the problem.
      this.awareness.applyDelta(expectedNacks > 0 ? Math.max(0, expectedNacks - nacks) : 1);
      const cur = this.nodes.get(target.id);
      if (!cur || cur.status === "dead" || cur.status === "left" || cur.addr !== target.addr) {
        return;
      }
      this.suspectNode({
        type: "suspect",
        incarnation: cur.incarnation,
        node: cur.id,
        from: this.id,
      });
    });
  }

  private async tcpPing(target: NodeState, timeoutMs: number): Promise<boolean> {
    if (timeoutMs <= 0) return false;
    let s: Stream | null = null;
    try {
      s = await this.transport.dialStream(target.addr, timeoutMs);
      const seq = this.nextSeq();
      const ping: PingMsg = {
        type: "ping",
        seq,
        target: target.id,
        sourceId: this.id,
        sourceAddr: this.transport.addr,
      };
      s.send(seal(this.cfg.keyring, encode(ping)));
      const reply = decode(open(this.cfg.keyring, await s.receive(timeoutMs)));
      return reply.type === "ack" && reply.seq === seq;
    } catch {
      return false;
    } finally {
      s?.close();
    }
  }

  private relayPing(from: string, m: IndirectPingMsg) {
    const seq = this.nextSeq();
    let answered = false;
    const t = this.after(this.cfg.probeTimeout, () => {
      this.ackHandlers.delete(seq);
      if (!answered && m.nack) this.sendMsgs(from, [encode({ type: "nack", seq: m.seq })]);
    });
    this.ackHandlers.set(seq, {
      ack: () => {
        if (answered) return;
        answered = true;
        this.cancel(t);
        this.ackHandlers.delete(seq);
        this.sendMsgs(from, [encode({ type: "ack", seq: m.seq })]);
      },
      nack: () => {},
    });
    this.sendMsgs(m.targetAddr, [
      encode({
        type: "ping",
        seq,
        target: m.target,
        sourceId: this.id,
        sourceAddr: this.transport.addr,
      }),
    ]);
  }

  /** Up to k distinct random members matching `ok` (random sampling, like memberlist). */
  kRandom(k: number, ok: (s: NodeState) => boolean): NodeState[] {
    const ids = this.probeOrder.length >= this.nodes.size
      ? this.probeOrder
      : [...this.nodes.keys()];
    const out: NodeState[] = [];
    const seen = new Set<string>();
    const n = ids.length;
    for (let i = 0; i < 3 * n && out.length < k; i++) {
      const id = ids[Math.floor(this.cfg.rng.next() * n)];
      if (seen.has(id)) continue;
      seen.add(id);
      const s = this.nodes.get(id);
      if (s && ok(s)) out.push(s);
    }
    return out;
  }

  // ---------------------------------------------------------------- gossip

  private gossipTick() {
    const now = this.clock.now();
    const targets = this.kRandom(this.cfg.gossipNodes, (n) =>
      n.id !== this.id &&
      (n.status === "alive" || n.status === "suspect" ||
        now - n.stateChange < this.cfg.gossipToTheDeadTime));
    const budget = packetBudget(this.cfg.maxPacketSize, this.cfg.keyring) - COMPOUND_HEADER;
    for (const t of targets) {
      const parts = this.queue.getBroadcasts(COMPOUND_PART_OVERHEAD, budget);
      if (parts.length === 0) break;
      this.sendRaw(t.addr, pack(parts));
    }
    this.after(this.cfg.gossipInterval, () => this.gossipTick());
  }

  // ---------------------------------------------------------------- state machine

  /** Handle news that `a.node` is alive (memberlist's aliveNode). */
  aliveNode(a: AliveMsg, bootstrap: boolean, finished?: () => void): void {
    const isLocal = a.node === this.id;
    if (isLocal && this.leaving && !bootstrap) return;
    let s = this.nodes.get(a.node);
    let isNew = false, takeover = false;
    const now = this.clock.now();
    if (!s) {
      s = {
        id: a.node,
        addr: a.addr,
        incarnation: 0,
        status: "dead",
        meta: a.meta.slice(), // decoded bytes are views into the packet: keep a copy
        stateChange: now,
      };
      this.nodes.set(a.node, s);
      // New members go to a random place in the probe order (append, then swap, like
      // memberlist), so all members do not probe a newcomer at once.
      const order = this.probeOrder;
      order.push(a.node);
      const at = Math.floor(this.cfg.rng.next() * order.length);
      [order[at], order[order.length - 1]] = [order[order.length - 1], order[at]];
      isNew = true;
    } else if (s.addr !== a.addr) {
      const reclaimable = !isLocal && (s.status === "dead" || s.status === "left") &&
        now - s.stateChange >= this.cfg.deadNodeReclaimTime;
      if (!reclaimable) {
        // Same id, other address, while the id's holder may be alive: refuse the impostor.
        if (this.wants("conflict")) {
          this.emit({ type: "conflict", member: { ...this.member(s), addr: a.addr }, at: now });
        }
        return;
      }
      takeover = true;
    }
    if (!isNew && !takeover && !bootstrap) {
      if (!isLocal && a.incarnation <= s.incarnation) return;
      if (isLocal && a.incarnation < s.incarnation) return;
    }
    this.suspicions.get(a.node)?.stop();
    this.suspicions.delete(a.node);

    if (isLocal && !bootstrap) {
      // News about us that we did not send (an old incarnation of ours, e.g. before a restart).
      if (a.incarnation === s.incarnation && sameBytes(a.meta, s.meta)) return;
      this.refute(s, a.incarnation);
      return;
    }
    this.broadcast(a.node, a, finished);
    const oldStatus = s.status, oldMeta = s.meta;
    s.incarnation = a.incarnation;
    if (!sameBytes(s.meta, a.meta)) {
      s.meta = a.meta.slice();
      s.decoded = undefined;
    }
    s.addr = a.addr;
    if (s.status !== "alive") {
      s.status = "alive";
      s.stateChange = now;
    }
    if (isNew || oldStatus === "dead" || oldStatus === "left") this.event("join", s);
    else {
      if (oldStatus === "suspect") this.event("alive", s);
      if (!sameBytes(oldMeta, a.meta)) this.event("update", s);
    }
  }

  /** Handle an accusation (memberlist's suspectNode). */
  suspectNode(m: SuspectMsg): void {
    const s = this.nodes.get(m.node);
    if (!s) return;
    if (m.incarnation < s.incarnation) {
      if (m.node === this.id) this.reassert(m.from);
      return;
    }
    const timer = this.suspicions.get(m.node);
    if (timer) {
      // Only new, independent confirmations are re-gossiped: they shrink others' timers too.
      if (timer.confirm(m.from)) this.broadcast(m.node, m);
      if (m.from === this.id) this.nag(s, m);
      return;
    }
    if (s.status !== "alive") return;
    if (m.node === this.id) {
      this.refute(s, m.incarnation, m.from);
      return;
    }
    this.broadcast(m.node, m);
    s.incarnation = m.incarnation;
    s.status = "suspect";
    s.stateChange = this.clock.now();
    const n = this.nodes.size;
    let k = this.cfg.suspicionMult - 2;
    if (n - 2 < k) k = 0; // too few members to expect independent confirmations
    const min = suspicionTimeout(this.cfg.suspicionMult, n, this.cfg.probeInterval);
    const max = this.cfg.suspicionMaxTimeoutMult * min;
    const inc = m.incarnation;
    this.suspicions.set(
      m.node,
      new Suspicion(m.from, k, min, max, this.clock, () => {
        this.suspicions.delete(m.node);
        if (this.stopped) return;
        const cur = this.nodes.get(m.node);
        if (cur && cur.status === "suspect" && cur.incarnation === inc) {
          this.deadNode({ type: "dead", incarnation: inc, node: m.node, from: this.id });
        }
      }),
    );
    // Lifeguard's "buddy system", made eager: the accused is the one member that must hear
    // this, so tell it directly now instead of only on the next ping (up to a round later).
    // Originators nag at once; members that only heard the accusation wait a random 1–2
    // intervals (a refutation usually reaches them first, and then they never send).
    this.nag(s, m, m.from === this.id ? 0 : (1 + this.cfg.rng.next()) * this.cfg.probeInterval);
    this.event("suspect", s);
  }

  /**
   * Tell the accused directly, now and every probe interval while our suspicion stands. One
   * lost packet must not decide a death on a lossy network: the accused gets a fresh chance to
   * hear the accusation (and refute, straight back to us) each interval. A real death costs one
   * small packet per interval per suspecting member until the timer fires.
   */
  private nag(s: NodeState, m: SuspectMsg, delayMs = 0) {
    if (this.nagging.has(s.id)) return;
    this.nagging.add(s.id);
    const msg = encode({ type: "suspect", incarnation: m.incarnation, node: s.id, from: this.id });
    const tick = () => {
      const cur = this.nodes.get(s.id);
      if (!cur || cur.status !== "suspect" || cur.incarnation !== m.incarnation) {
        this.nagging.delete(s.id);
        return;
      }
      this.sendMsgs(cur.addr, [msg]);
      this.after(this.cfg.probeInterval, tick);
    };
    if (delayMs > 0) this.after(delayMs, tick);
    else tick();
  }

  /** Handle a death or a leave (memberlist's deadNode). */
  deadNode(d: DeadMsg, finished?: () => void): void {
    const s = this.nodes.get(d.node);
    if (!s) return;
    if (d.incarnation < s.incarnation) {
      if (d.node === this.id && !this.leaving) this.reassert(d.from);
      return;
    }
    this.suspicions.get(d.node)?.stop();
    this.suspicions.delete(d.node);
    if (s.status === "dead" || s.status === "left") return;
    if (d.node === this.id && !this.leaving) {
      this.refute(s, d.incarnation, d.from);
      return;
    }
    this.broadcast(d.node, d, finished);
    s.incarnation = d.incarnation;
    s.status = d.from === d.node ? "left" : "dead";
    s.stateChange = this.clock.now();
    this.event(s.status === "left" ? "leave" : "dead", s);
  }

  /**
   * An accusation older than our latest refutation still circulates: the accuser has not heard
   * the refutation (all its copies may have been lost). Re-send our current alive, unless it is
   * still queued. memberlist ignores such accusations; on a lossy network that lets a refuted
   * suspicion run out its timer.
   */
  private reassert(accuser: string) {
    const s = this.local;
    this.replyDirect(accuser, s);
    if (this.queue.has(this.id)) return;
    this.broadcast(this.id, {
      type: "alive",
      incarnation: s.incarnation,
      node: this.id,
      addr: s.addr,
      meta: s.meta,
    });
  }

  /** We are accused: outbid the accusation's incarnation and tell everyone we are alive. */
  /** Send our current alive straight to an accuser (at most once per probe interval each). */
  private replyDirect(accuser: string, s: NodeState) {
    const to = this.nodes.get(accuser);
    const now = this.clock.now();
    if (
      !to || accuser === this.id ||
      now - (this.lastReply.get(accuser) ?? -Infinity) < this.cfg.probeInterval
    ) return;
    this.lastReply.set(accuser, now);
    this.sendMsgs(to.addr, [
      encode({
        type: "alive",
        incarnation: s.incarnation,
        node: this.id,
        addr: s.addr,
        meta: s.meta,
      }),
    ]);
  }

  private refute(s: NodeState, accused: number, accuser?: string) {
    s.incarnation = Math.max(s.incarnation + 1, accused + 1);
    this.awareness.applyDelta(1); // being suspected is a hint that we are slow
    this.broadcast(this.id, {
      type: "alive",
      incarnation: s.incarnation,
      node: this.id,
      addr: s.addr,
      meta: s.meta,
    });
    if (accuser) {
      this.lastReply.delete(accuser);
      this.replyDirect(accuser, s);
    }
  }

  /** Publish new local metadata with a higher incarnation. */
  updateLocalMeta(meta: Uint8Array): void {
    const s = this.local;
    s.incarnation++;
    s.meta = meta;
    s.decoded = undefined;
    this.broadcast(this.id, {
      type: "alive",
      incarnation: s.incarnation,
      node: this.id,
      addr: s.addr,
      meta,
    });
  }

  // ---------------------------------------------------------------- push-pull

  private pushPullTick() {
    const t = this.kRandom(1, (n) => n.id !== this.id && n.status === "alive")[0];
    if (t) {
      void this.pushPull(t.addr, false).catch(() => this.stats.pushPullFailures++);
    }
    this.after(
      pushPullScale(this.cfg.pushPullInterval, this.nodes.size),
      () => this.pushPullTick(),
    );
  }

  /**
   * Try one dead or left member (still in the table, or reaped but remembered): if it answers,
   * its state merges into ours and ours into its, and whichever side was wrongly dead refutes.
   */
  private reconnectTick() {
    const now = this.clock.now();
    const candidates: string[] = [];
    for (const s of this.nodes.values()) {
      // Left members too: one stopped gracefully and restarted without --seeds (a seed, say)
      // only finds the cluster again if the cluster calls it.
      if ((s.status === "dead" || s.status === "left") && s.id !== this.id) {
        candidates.push(s.addr);
      }
    }
    for (const [id, d] of this.departed) {
      if (now - d.since <= this.cfg.reconnectTimeout && !this.nodes.has(id)) {
        candidates.push(d.addr);
      }
    }
    if (candidates.length) {
      const addr = candidates[Math.floor(this.cfg.rng.next() * candidates.length)];
      void this.pushPull(addr, false).catch(() => {});
    }
    this.after(this.cfg.reconnectInterval, () => this.reconnectTick());
  }

  private localState(join: boolean): PushPullMsg {
    const nodes: PushNodeState[] = [];
    for (const s of this.nodes.values()) {
      nodes.push({
        id: s.id,
        addr: s.addr,
        incarnation: s.incarnation,
        status: s.status,
        meta: s.meta,
      });
    }
    return { type: "pushPull", join, from: this.id, nodes };
  }

  /** Exchange full state with `addr` over a stream; `join` asks the peer to vet our id. */
  async pushPull(addr: string, join: boolean): Promise<void> {
    if (!join) return this.antiEntropy(addr);
    const s = await this.transport.dialStream(addr, this.cfg.tcpTimeout);
    try {
      s.send(seal(this.cfg.keyring, encode(this.localState(join))));
      const reply = decode(open(this.cfg.keyring, await s.receive(this.cfg.tcpTimeout)));
      if (reply.type === "error") {
        if (reply.code === "duplicate-id") throw new DuplicateNodeIdError(reply.message);
        throw new Error(`${addr} refused push-pull: ${reply.message}`);
      }
      if (reply.type !== "pushPull") {
        throw new Error(`${addr} answered push-pull with ${reply.type}`);
      }
      if (join) {
        const mine = reply.nodes.find((n) => n.id === this.id);
        if (
          mine && mine.addr !== this.transport.addr &&
          (mine.status === "alive" || mine.status === "suspect")
        ) {
          throw new DuplicateNodeIdError(this.duplicateMessage(mine.addr));
        }
      }
      this.stats.pushPulls++;
      // Like memberlist, news learned here is re-gossiped even on join: when many members start
      // together, the early ones only hear of later ones through these re-broadcasts.
      if (!this.stopped) this.mergeRemoteState(reply);
    } finally {
      s.close();
    }
  }

  /**
   * Periodic anti-entropy by digest: send versions only (~20 bytes a member instead of ~140),
   * get back full entries where the views differ plus the ids the peer wants, send those.
   * In steady state the views agree and only the two digests-worth of bytes cross the wire.
   */
  private async antiEntropy(addr: string): Promise<void> {
    const s = await this.transport.dialStream(addr, this.cfg.tcpTimeout);
    try {
      const entries: DigestEntry[] = [];
      for (const n of this.nodes.values()) {
        entries.push({
          id: n.id,
          incarnation: n.incarnation,
          status: n.status,
          hash: versionHash(n),
        });
      }
      s.send(seal(this.cfg.keyring, encode({ type: "digest", from: this.id, entries })));
      const reply = decode(open(this.cfg.keyring, await s.receive(this.cfg.tcpTimeout)));
      if (reply.type === "error") throw new Error(`${addr} refused push-pull: ${reply.message}`);
      if (reply.type !== "delta") throw new Error(`${addr} answered a digest with ${reply.type}`);
      if (reply.want.length) {
        const nodes = reply.want.map((id) => this.nodes.get(id)).filter((n) => n !== undefined)
          .map(toPush);
        s.send(
          seal(this.cfg.keyring, encode({ type: "pushPull", join: false, from: this.id, nodes })),
        );
      }
      this.stats.pushPulls++;
      if (!this.stopped) {
        this.mergeRemoteState({
          type: "pushPull",
          join: false,
          from: reply.from,
          nodes: reply.nodes,
        });
      }
    } finally {
      s.close();
    }
  }

  /** Answer a digest: our entries where we are as new or newer and differ; ids where they are. */
  private delta(m: DigestMsg): DeltaMsg {
    const theirs = new Map(m.entries.map((e) => [e.id, e]));
    const nodes: PushNodeState[] = [];
    const want: string[] = [];
    for (const n of this.nodes.values()) {
      const e = theirs.get(n.id);
      if (!e || (n.incarnation >= e.incarnation && !sameVersion(n, e))) nodes.push(toPush(n));
    }
    for (const e of m.entries) {
      const n = this.nodes.get(e.id);
      if (!n || (e.incarnation >= n.incarnation && !sameVersion(n, e))) want.push(e.id);
    }
    return { type: "delta", from: this.id, nodes, want };
  }

  private duplicateMessage(holder: string): string {
    return `node id "${this.id}" is already used by a live member at ${holder}; ` +
      `give this node a unique id (--node-id / DLLM_NODE_ID), or stop the other one and retry ` +
      `after it is declared dead`;
  }

  private async handleStream(s: Stream) {
    try {
      const m = decode(open(this.cfg.keyring, await s.receive(this.cfg.tcpTimeout)));
      if (m.type === "ping") {
        if (m.target !== this.id) return this.drop("misdirected");
        s.send(seal(this.cfg.keyring, encode({ type: "ack", seq: m.seq })));
      } else if (m.type === "digest") {
        const d = this.delta(m);
        s.send(seal(this.cfg.keyring, encode(d)));
        if (d.want.length) {
          const rest = decode(open(this.cfg.keyring, await s.receive(this.cfg.tcpTimeout)));
          if (rest.type !== "pushPull") return this.drop("unexpected");
          if (!this.stopped) this.mergeRemoteState(rest);
        }
      } else if (m.type === "pushPull") {
        if (m.join) {
          const conflict = this.joinConflict(m);
          if (conflict) {
            s.send(
              seal(
                this.cfg.keyring,
                encode({ type: "error", code: "duplicate-id", message: conflict }),
              ),
            );
            return;
          }
        }
        s.send(seal(this.cfg.keyring, encode(this.localState(false))));
        if (!this.stopped) this.mergeRemoteState(m);
      } else {
        this.drop("unexpected");
      }
    } catch (e) {
      const r = dropReason(e);
      this.drop(r === "internal" ? "stream" : r, e);
    } finally {
      s.close();
    }
  }

  private joinConflict(m: PushPullMsg): string | null {
    const joiner = m.nodes.find((n) => n.id === m.from);
    if (!joiner) return null;
    const have = this.nodes.get(m.from);
    if (!have || have.addr === joiner.addr) return null;
    if (have.status === "alive" || have.status === "suspect") {
      return `node id "${m.from}" is already used by a live member at ${have.addr} (you are ${joiner.addr}); ` +
        `give the joining node a unique id (--node-id / DLLM_NODE_ID)`;
    }
    return null;
  }

  /** Merge a peer's full state (memberlist's mergeState): a remote "dead" only makes us suspect. */
  mergeRemoteState(m: PushPullMsg): void {
    for (const n of m.nodes) {
      switch (n.status) {
        case "alive":
          this.aliveNode(
            {
              type: "alive",
              incarnation: n.incarnation,
              node: n.id,
              addr: n.addr,
              meta: n.meta,
            },
            false,
          );
          break;
        case "left":
          this.deadNode({ type: "dead", incarnation: n.incarnation, node: n.id, from: n.id });
          break;
        case "dead":
        case "suspect":
          this.suspectNode({
            type: "suspect",
            incarnation: n.incarnation,
            node: n.id,
            from: m.from,
          });
          break;
      }
    }
  }

  /** Number of members not dead or left (including us). */
  numAlive(): number {
    let n = 0;
    for (const s of this.nodes.values()) if (s.status === "alive" || s.status === "suspect") n++;
    return n;
  }
}
