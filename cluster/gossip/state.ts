/**
 * The protocol core: the member table and the suspicion state machine with incarnations and
 * refutation (memberlist's aliveNode / suspectNode / deadNode), packet sending and receiving,
 * and dissemination of news on probes and gossip ticks. Probing is in `probe.ts`, push-pull
 * anti-entropy in `pushpull.ts`; both drive this state machine. It touches the world only
 * through a {@linkcode Transport} and the transport's {@linkcode Clock}, and takes randomness
 * from `config.rng`, so the same code runs on UDP and in the simulator.
 *
 * @module
 */
import type { Clock, TimerHandle } from "./clock.ts";
import {
  type AliveMsg,
  COMPOUND_HEADER,
  COMPOUND_PART_OVERHEAD,
  type DeadMsg,
  encode,
  type Message,
  type SuspectMsg,
} from "./codec.ts";
import type { Config } from "./config.ts";
import { Awareness } from "./awareness.ts";
import type { EventType, Member, MemberEvent, NodeState, Stats } from "./member.ts";
import { TransmitLimitedQueue } from "./queue.ts";
import { Suspicion, suspicionTimeout } from "./suspicion.ts";
import { decodeMetadata } from "./metadata.ts";
import { type DropReason, dropReason, open, pack, packetBudget, seal, unpack } from "./net.ts";
import { Prober } from "./probe.ts";
import { Drops } from "./drops.ts";
import { PushPull } from "./pushpull.ts";
import { splitHostPort, type Transport } from "./transport.ts";

function rank(m: Message): number {
  return m.type === "alive" || m.type === "suspect" || m.type === "dead" ? 0 : 1;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The highest incarnation the wire carries (a u32). */
const MAX_INCARNATION = 0xffffffff;

/** The membership state machine of one member. Use it through `Memberlist`. */
export class GossipState {
  readonly nodes = new Map<string, NodeState>();
  /** When the last "cannot refute" warning was logged (see refute). */
  #toppedWarnedAt = -Infinity;
  readonly queue: TransmitLimitedQueue;
  readonly awareness: Awareness;
  readonly clock: Clock;
  readonly #drops: Drops;
  readonly stats: Stats = {
    droppedPackets: {
      decrypt: 0,
      malformed: 0,
      misdirected: 0,
      unexpected: 0,
      stream: 0,
      full: 0,
      cluster: 0,
      version: 0,
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
  /** Set by stop(): timers and handlers do nothing after it. */
  stopped = false;
  /** Dead and left members reaped from `nodes`, remembered for reconnect attempts. */
  readonly departed = new Map<string, { addr: string; since: number }>();
  /** SWIM probing (probe.ts). */
  readonly prober: Prober = new Prober(this);
  /** Push-pull anti-entropy and joins (pushpull.ts). */
  readonly pushPull: PushPull = new PushPull(this);
  private suspicions = new Map<string, Suspicion>();
  private nagging = new Set<string>();
  private lastReply = new Map<string, number>();
  private timers = new Set<TimerHandle>();
  /**
   * The latest alive claim of a dead id from a new address, taken up once reclaimable (an entry
   * exists exactly while its timer is pending).
   */
  readonly #laterClaims = new Map<string, AliveMsg>();

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
    this.#drops = new Drops(this.stats, cfg, this.clock);
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
    this.transport.onStream((s) => void this.pushPull.serve(s));
    this.aliveNode({
      type: "alive",
      incarnation: Math.min(MAX_INCARNATION, Math.max(0, Math.floor(this.cfg.startIncarnation()))),
      node: this.id,
      addr: this.transport.addr,
      meta,
    }, true);
    const r = () => this.cfg.rng.next();
    // Random stagger so members started together do not probe and gossip in lock-step.
    this.after(r() * this.cfg.probeInterval, () => this.prober.tick());
    this.after(r() * this.cfg.gossipInterval, () => this.gossipTick());
    this.after(
      r() * this.cfg.pushPullInterval + this.cfg.pushPullInterval / 2,
      () => this.pushPull.tick(),
    );
    this.after(
      r() * this.cfg.reconnectInterval + this.cfg.reconnectInterval,
      () => this.pushPull.reconnectTick(),
    );
  }

  /** Stop every loop and timer. */
  stop(): void {
    this.stopped = true;
    for (const t of this.timers) this.clock.clearTimeout(t);
    this.timers.clear();
    for (const s of this.suspicions.values()) s.stop();
    this.suspicions.clear();
    this.prober.clear();
  }

  /** Run `fn` after `ms` unless stopped first. */
  after(ms: number, fn: () => void): TimerHandle {
    const h: TimerHandle = this.clock.setTimeout(() => {
      this.timers.delete(h);
      if (!this.stopped) fn();
    }, ms);
    this.timers.add(h);
    return h;
  }

  /** Cancel a timer of `after`. */
  cancel(h: TimerHandle): void {
    this.clock.clearTimeout(h);
    this.timers.delete(h);
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
    this.transport.sendPacket(addr, seal(this.cfg, plain));
  }

  /** Send messages to `addr`, filling the rest of the datagram with queued broadcasts. */
  sendMsgs(addr: string, msgs: Uint8Array[]): void {
    const budget = packetBudget(this.cfg.maxPacketSize, this.cfg);
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
      msgs = unpack(open(this.cfg, raw));
    } catch (e) {
      this.drop(dropReason(e), e, from, raw);
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

  /**
   * Count a dropped packet or stream from `from` (and log handler failures, wrong keys and bytes
   * that are not gossip); `raw`: the bytes that failed to open or decode.
   */
  drop(reason: DropReason, e?: unknown, from?: string, raw?: Uint8Array): void {
    this.#drops.drop(reason, e, from, raw);
  }

  private handle(from: string, m: Message) {
    switch (m.type) {
      case "ping":
        if (m.target !== this.id) return this.drop("misdirected");
        this.sendMsgs(from, [encode({ type: "ack", seq: m.seq })]);
        this.#syncWithStranger(m.sourceId, m.sourceAddr, from);
        return;
      case "indirectPing":
        return this.prober.relay(from, m);
      case "ack":
        return this.prober.ack(m.seq);
      case "nack":
        return this.prober.nack(m.seq);
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

  /** Up to k distinct random members matching `ok` (random sampling, like memberlist). */
  kRandom(k: number, ok: (s: NodeState) => boolean): NodeState[] {
    return this.prober.kRandom(k, ok);
  }

  // ---------------------------------------------------------------- gossip

  private gossipTick() {
    const now = this.clock.now();
    const targets = this.kRandom(this.cfg.gossipNodes, (n) =>
      n.id !== this.id &&
      (n.status === "alive" || n.status === "suspect" ||
        now - n.stateChange < this.cfg.gossipToTheDeadTime));
    const budget = packetBudget(this.cfg.maxPacketSize, this.cfg) - COMPOUND_HEADER;
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
    if (!isLocal && !reachableAddr(a.addr)) {
      // "nonsense" or port 0: nothing could reach it, and its listing failed every
      // `nodes list` and the TUI's update stream for as long as it was remembered.
      this.drop("malformed");
      return;
    }
    let s = this.nodes.get(a.node);
    let isNew = false, takeover = false;
    const now = this.clock.now();
    if (!s && this.nodes.size >= this.cfg.maxMembers && !isLocal) {
      // A flood of made-up ids (one push-pull can carry a million): the table stays bounded.
      this.drop("full");
      return;
    }
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
      this.prober.enqueue(a.node);
      isNew = true;
    } else if (s.addr !== a.addr) {
      const gone = !isLocal && (s.status === "dead" || s.status === "left");
      const reclaimable = gone && now - s.stateChange >= this.cfg.deadNodeReclaimTime;
      if (gone && !reclaimable) {
        // A restarted process at a new address, a moment too early: take its claim up when the
        // id becomes reclaimable. It announces itself only in its first gossip rounds, so
        // refusing it for good would leave it out until the next push-pull (seconds).
        if (!this.#laterClaims.has(a.node)) {
          this.after(s.stateChange + this.cfg.deadNodeReclaimTime - now, () => {
            const claim = this.#laterClaims.get(a.node)!;
            this.#laterClaims.delete(a.node);
            this.aliveNode(claim, false);
          });
        }
        this.#laterClaims.set(a.node, { ...a, meta: a.meta.slice() });
      }
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

  /** When the last stranger sync started, and whether one is running (#syncWithStranger). */
  #strangerSyncAt = -Infinity;
  #strangerSyncing = false;

  /**
   * A ping from a member we do not know means it knows us: most likely we restarted (at the
   * same address, before anyone saw us die) and it still holds our previous life. Sync with it
   * at once: its state brings us every member and our old incarnation, which we then outbid with
   * our metadata. Before, such a member acked every probe, so nobody suspected it, and stayed
   * alone until a random push-pull found it (about a minute), while the others routed by its
   * previous life's metadata.
   *
   * Only toward the address the ping came from (a ping naming another address could make us dial
   * anyone), one at a time, at most one per probe interval: made-up ids cannot turn pings into
   * a flood of streams.
   */
  #syncWithStranger(id: string, addr: string, from: string): void {
    if (!id || id === this.id || this.nodes.has(id) || this.stopped || this.leaving) return;
    if (addr !== from || this.#strangerSyncing) return;
    const now = this.clock.now();
    if (now - this.#strangerSyncAt < this.cfg.probeInterval) return;
    this.#strangerSyncAt = now;
    this.#strangerSyncing = true;
    void this.pushPull.antiEntropy(addr)
      .catch(() => this.stats.pushPullFailures++)
      .finally(() => this.#strangerSyncing = false);
  }

  /** Handle an accusation (memberlist's suspectNode). */
  suspectNode(m: SuspectMsg): void {
    const s = this.nodes.get(m.node);
    if (!s) return;
    if (m.incarnation < s.incarnation) {
      if (m.node === this.id && !this.leaving) this.reassert(m.from);
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
      this.cfg.onDeathRefuted?.();
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
    this.broadcast(this.id, this.aliveOf(s));
  }

  /** Send our current alive straight to an accuser (at most once per probe interval each). */
  private replyDirect(accuser: string, s: NodeState) {
    const to = this.nodes.get(accuser);
    const now = this.clock.now();
    if (
      !to || accuser === this.id ||
      now - (this.lastReply.get(accuser) ?? -Infinity) < this.cfg.probeInterval
    ) return;
    this.lastReply.set(accuser, now);
    this.sendMsgs(to.addr, [encode(this.aliveOf(s))]);
  }

  /** We are accused: outbid the accusation's incarnation and tell everyone we are alive. */
  private refute(s: NodeState, accused: number, accuser?: string) {
    if (accused >= MAX_INCARNATION) {
      // Incarnations are 32 bits on the wire: no refutation can outbid this one, and a wrapped
      // one would be ignored by everyone. Only a key holder (or anyone, without --gossip-keys,
      // which off loopback needs --insecure-bind-all) can send it. Said once a minute at most:
      // the sender could repeat it.
      const now = this.clock.now();
      if (now - this.#toppedWarnedAt >= 60_000) {
        this.#toppedWarnedAt = now;
        this.cfg.logger?.("warn", "accused at the highest incarnation; cannot refute", {
          accuser: accuser ?? "?",
          hint: "rotate --gossip-keys if a peer is hostile; restart this agent under a new id",
        });
      }
      return;
    }
    s.incarnation = Math.max(s.incarnation + 1, accused + 1);
    this.awareness.applyDelta(1); // being suspected is a hint that we are slow
    this.broadcast(this.id, this.aliveOf(s));
    if (accuser) {
      this.lastReply.delete(accuser);
      this.replyDirect(accuser, s);
    }
  }

  /** Our own alive message, as state `s` (our record) stands. */
  private aliveOf(s: NodeState): AliveMsg {
    return { type: "alive", incarnation: s.incarnation, node: this.id, addr: s.addr, meta: s.meta };
  }

  /**
   * Publish new local metadata with a higher incarnation. Not once leaving: its alive, queued
   * under our id, would replace the leave in the queue (finishing leave() at once) and tell
   * every peer we are alive; they would then see us die instead of leave.
   */
  updateLocalMeta(meta: Uint8Array): void {
    if (this.leaving) return;
    const s = this.local;
    // 4 billion updates: not in this agent's lifetime; never wrap to a number peers ignore.
    s.incarnation = Math.min(MAX_INCARNATION, s.incarnation + 1);
    s.meta = meta;
    s.decoded = undefined;
    this.broadcast(this.id, this.aliveOf(s));
  }

  /** Number of members not dead or left (including us). */
  numAlive(): number {
    let n = 0;
    for (const s of this.nodes.values()) if (s.status === "alive" || s.status === "suspect") n++;
    return n;
  }
}

/** Whether `addr` is a host:port a member could be reached at (a port from 1 to 65535). */
function reachableAddr(addr: string): boolean {
  try {
    const { host, port } = splitHostPort(addr);
    return host.length > 0 && port >= 1 && port <= 65535;
  } catch {
    return false;
  }
}
