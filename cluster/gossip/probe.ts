/**
 * SWIM failure detection (memberlist's probeNode): every probe interval the next member of a
 * shuffled round-robin order is pinged; without an ack by the probe timeout, k other members
 * ping it for us (indirect probes, which nack when they get nothing) and a TCP ping tries the
 * stream path; with no ack by the end of the interval it is suspected. Lifeguard's awareness
 * scales both timeouts with our own health, and relays that stay silent count against us.
 *
 * @module
 */
import { shuffle, type TimerHandle } from "./clock.ts";
import { decode, encode, type IndirectPingMsg, type PingMsg, type SuspectMsg } from "./codec.ts";
import type { Awareness } from "./awareness.ts";
import type { MemberTable, NodeState } from "./member.ts";
import { open, seal } from "./net.ts";
import type { Stream } from "./transport.ts";

/** What probing needs of the membership state (GossipState provides it). */
export interface ProbeHost extends MemberTable {
  readonly awareness: Awareness;
  cancel(h: TimerHandle): void;
  sendMsgs(addr: string, msgs: Uint8Array[]): void;
  suspectNode(m: SuspectMsg): void;
}

interface AckHandler {
  ack(): void;
  nack(): void;
}

/** The probe loop of one member, its probe order and its outstanding acks. */
export class Prober {
  readonly #st: ProbeHost;
  #order: string[] = [];
  #index = 0;
  readonly #acks = new Map<number, AckHandler>();
  /** Members with a probe out (probeNow sends no second one). */
  readonly #inFlight = new Set<string>();
  #seq = 0;

  constructor(st: ProbeHost) {
    this.#st = st;
  }

  #nextSeq(): number {
    this.#seq = (this.#seq + 1) >>> 0;
    return this.#seq;
  }

  /** A ping of member `target` from us. */
  #ping(seq: number, target: string): PingMsg {
    return {
      type: "ping",
      seq,
      target,
      sourceId: this.#st.id,
      sourceAddr: this.#st.transport.addr,
    };
  }

  /** An ack for probe or relay `seq` arrived. */
  ack(seq: number): void {
    this.#acks.get(seq)?.ack();
  }

  /** A relay reported that it got no ack for `seq`. */
  nack(seq: number): void {
    this.#acks.get(seq)?.nack();
  }

  /** Forget outstanding probes (the member stopped). */
  clear(): void {
    this.#acks.clear();
    this.#inFlight.clear();
  }

  /**
   * Put a new member at a random place in the probe order (append, then swap, like memberlist),
   * so all members do not probe a newcomer at once.
   */
  enqueue(id: string): void {
    const order = this.#order;
    order.push(id);
    const at = Math.floor(this.#st.cfg.rng.next() * order.length);
    [order[at], order[order.length - 1]] = [order[order.length - 1], order[at]];
  }

  /**
   * Probe member `id` now, out of turn: the application saw its connection fail (a refused or
   * reset stream), and waiting for its turn in the round-robin (up to a whole round) would keep
   * a dead member in everyone's plans for seconds. The usual SWIM rules then apply: an ack clears
   * it; no ack, direct or indirect, within the probe interval makes it suspect. Returns whether a
   * probe was sent (not for ourselves, unknown, suspect, dead or left members, nor when one is
   * already out for it).
   */
  probeNow(id: string): boolean {
    const target = this.#st.nodes.get(id);
    if (!target || id === this.#st.id || target.status !== "alive") return false;
    if (this.#inFlight.has(id)) return false;
    this.#probe(target);
    return true;
  }

  /** Probe the next member, then schedule the next probe (scaled by our awareness). */
  tick(): void {
    const target = this.#nextTarget();
    if (target) this.#probe(target);
    this.#st.after(this.#st.awareness.scaleTimeout(this.#st.cfg.probeInterval), () => this.tick());
  }

  #nextTarget(): NodeState | null {
    for (let tries = 0; tries <= this.#order.length + 1; tries++) {
      if (this.#index >= this.#order.length) {
        this.#resetOrder();
        if (this.#order.length === 0) return null;
      }
      const s = this.#st.nodes.get(this.#order[this.#index++]);
      if (!s || s.id === this.#st.id || s.status === "dead" || s.status === "left") continue;
      return s;
    }
    return null;
  }

  /**
   * End of a round: reap long-dead members, reshuffle (SWIM's shuffled round-robin). Dead and
   * left members are remembered for reconnect attempts until `reconnectTimeout`.
   */
  #resetOrder() {
    const now = this.#st.clock.now();
    for (const [id, s] of this.#st.nodes) {
      if (
        (s.status === "dead" || s.status === "left") &&
        now - s.stateChange > this.#st.cfg.gossipToTheDeadTime
      ) {
        this.#st.nodes.delete(id);
        this.#st.departed.set(id, { addr: s.addr, since: s.stateChange });
      }
    }
    for (const [id, d] of this.#st.departed) {
      if (now - d.since > this.#st.cfg.reconnectTimeout || this.#st.nodes.has(id)) {
        this.#st.departed.delete(id);
      }
    }
    this.#order = shuffle([...this.#st.nodes.keys()], this.#st.cfg.rng);
    this.#index = 0;
  }

  #probe(target: NodeState) {
    this.#st.stats.probes++;
    const seq = this.#nextSeq();
    const timeout = this.#st.awareness.scaleTimeout(this.#st.cfg.probeTimeout);
    const interval = this.#st.awareness.scaleTimeout(this.#st.cfg.probeInterval);
    let done = false, nacks = 0, expectedNacks = 0;
    const sentAt = this.#st.clock.now();
    const onAck = () => {
      if (done) return;
      done = true;
      this.#st.awareness.applyDelta(-1);
      const rtt = this.#st.clock.now() - sentAt;
      const srtt = this.#st.stats.probeRttMs;
      this.#st.stats.probeRttMs = srtt === 0 ? rtt : srtt + (rtt - srtt) / 8;
    };
    this.#acks.set(seq, { ack: onAck, nack: () => nacks++ });
    this.#inFlight.add(target.id);
    const msgs = [encode(this.#ping(seq, target.id))];
    // A suspect target gets the accusation with the ping, so it can refute at once.
    if (target.status === "suspect") {
      msgs.push(
        encode({
          type: "suspect",
          incarnation: target.incarnation,
          node: target.id,
          from: this.#st.id,
        }),
      );
    }
    this.#st.sendMsgs(target.addr, msgs);

    this.#st.after(timeout, () => {
      if (done) return;
      const relays = this.kRandom(
        this.#st.cfg.indirectChecks,
        (n) => n.id !== this.#st.id && n.id !== target.id && n.status === "alive",
      );
      expectedNacks = relays.length;
      const ind = encode({
        type: "indirectPing",
        seq,
        target: target.id,
        targetAddr: target.addr,
        sourceId: this.#st.id,
        sourceAddr: this.#st.transport.addr,
        nack: true,
      });
      for (const r of relays) this.#st.sendMsgs(r.addr, [ind]);
      if (!this.#st.cfg.disableTcpPings) {
        void this.#tcpPing(target, interval - timeout).then((ok) => {
          if (ok && !done) {
            this.#st.stats.tcpFallbackAcks++;
            onAck();
          }
        });
      }
    });

    this.#st.after(interval, () => {
      this.#acks.delete(seq);
      this.#inFlight.delete(target.id);
      if (done) return;
      done = true;
      this.#st.stats.failedProbes++;
      // Lifeguard: relays that neither acked nor nacked suggest *we* are the problem.
      this.#st.awareness.applyDelta(expectedNacks > 0 ? Math.max(0, expectedNacks - nacks) : 1);
      const cur = this.#st.nodes.get(target.id);
      if (!cur || cur.status === "dead" || cur.status === "left" || cur.addr !== target.addr) {
        return;
      }
      this.#st.suspectNode({
        type: "suspect",
        incarnation: cur.incarnation,
        node: cur.id,
        from: this.#st.id,
      });
    });
  }

  async #tcpPing(target: NodeState, timeoutMs: number): Promise<boolean> {
    if (timeoutMs <= 0) return false;
    let s: Stream | null = null;
    try {
      s = await this.#st.transport.dialStream(target.addr, timeoutMs);
      const seq = this.#nextSeq();
      s.send(seal(this.#st.cfg, encode(this.#ping(seq, target.id))));
      const reply = decode(open(this.#st.cfg, await s.receive(timeoutMs)));
      return reply.type === "ack" && reply.seq === seq;
    } catch {
      return false;
    } finally {
      s?.close();
    }
  }

  /**
   * Whether a process at `addr` answers now, over a stream, a ping for member `target`: one that
   * takes itself for `target` acks it. The sequence number is drawn at random, so no ack recorded
   * earlier (sealed, but replayable) can answer it.
   */
  async pingAt(addr: string, target: string, timeoutMs: number): Promise<boolean> {
    let s: Stream | null = null;
    try {
      s = await this.#st.transport.dialStream(addr, timeoutMs);
      const seq = crypto.getRandomValues(new Uint32Array(1))[0];
      s.send(seal(this.#st.cfg, encode(this.#ping(seq, target))));
      const reply = decode(open(this.#st.cfg, await s.receive(timeoutMs)));
      return reply.type === "ack" && reply.seq === seq;
    } catch {
      return false;
    } finally {
      s?.close();
    }
  }

  /** Ping `m.target` on behalf of `from` (an indirect probe) and pass its ack or a nack back. */
  relay(from: string, m: IndirectPingMsg): void {
    const seq = this.#nextSeq();
    let answered = false;
    // The nack goes out after half a probe timeout: the requester sent this ping one probe
    // timeout into its probe interval (two timeouts at its health score 0), and a nack after a
    // whole timeout arrived after the requester had stopped counting them, so every probe of a
    // dead member raised a healthy prober's score by the nacks it expected (Lifeguard; the
    // pitfall apple/swift-cluster-membership fixed the same way). A late ack is still passed on.
    const nackAt = this.#st.after(Math.round(this.#st.cfg.probeTimeout / 2), () => {
      if (!answered && m.nack) this.#st.sendMsgs(from, [encode({ type: "nack", seq: m.seq })]);
    });
    const t = this.#st.after(this.#st.cfg.probeTimeout, () => this.#acks.delete(seq));
    this.#acks.set(seq, {
      ack: () => {
        if (answered) return;
        answered = true;
        this.#st.cancel(nackAt);
        this.#st.cancel(t);
        this.#acks.delete(seq);
        this.#st.sendMsgs(from, [encode({ type: "ack", seq: m.seq })]);
      },
      nack: () => {},
    });
    this.#st.sendMsgs(m.targetAddr, [encode(this.#ping(seq, m.target))]);
  }

  /** Up to k distinct random members matching `ok` (random sampling, like memberlist). */
  kRandom(k: number, ok: (s: NodeState) => boolean): NodeState[] {
    const ids = this.#order.length >= this.#st.nodes.size
      ? this.#order
      : [...this.#st.nodes.keys()];
    const out: NodeState[] = [];
    const seen = new Set<string>();
    const n = ids.length;
    for (let i = 0; i < 3 * n && out.length < k; i++) {
      const id = ids[Math.floor(this.#st.cfg.rng.next() * n)];
      if (seen.has(id)) continue;
      seen.add(id);
      const s = this.#st.nodes.get(id);
      if (s && ok(s)) out.push(s);
    }
    return out;
  }
}
