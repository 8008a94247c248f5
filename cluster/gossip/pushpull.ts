/**
 * Push-pull state sync (memberlist's pushPull and mergeState) over the stream transport:
 * periodic anti-entropy by digest with one random member, a full-state exchange on join (which
 * also vets the joiner's id), reconnect attempts to dead and left members, and the answering
 * side of all of these. What arrives is merged through the state machine's alive / suspect /
 * dead handlers, so news learned here is re-gossiped like any other.
 *
 * @module
 */
import {
  type AliveMsg,
  type DeadMsg,
  decode,
  type DeltaMsg,
  type DigestEntry,
  type DigestMsg,
  encode,
  type PushNodeState,
  type PushPullMsg,
  type SuspectMsg,
} from "./codec.ts";
import { pushPullScale } from "./config.ts";
import { DuplicateNodeIdError, type MemberTable, type NodeState } from "./member.ts";
import { ClusterMismatchError, labelHeader, WIRE_VERSION, WireVersionError } from "./label.ts";
import { type DropReason, dropReason, open, seal } from "./net.ts";
import { type Stream, StreamClosedError } from "./transport.ts";

/** What push-pull needs of the membership state (GossipState provides it). */
export interface PushPullHost extends MemberTable {
  /** Set by stop(): nothing more is merged. */
  readonly stopped: boolean;
  drop(reason: DropReason, e?: unknown, from?: string, raw?: Uint8Array): void;
  kRandom(k: number, ok: (s: NodeState) => boolean): NodeState[];
  aliveNode(a: AliveMsg, bootstrap: boolean): void;
  suspectNode(m: SuspectMsg): void;
  deadNode(d: DeadMsg): void;
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

/** One member's side of push-pull: its two loops and the stream handler. */
export class PushPull {
  readonly #st: PushPullHost;

  constructor(st: PushPullHost) {
    this.#st = st;
  }

  /** Anti-entropy with one random live member, then schedule the next (scaled by cluster size). */
  tick(): void {
    const t = this.#st.kRandom(1, (n) => n.id !== this.#st.id && n.status === "alive")[0];
    if (t) {
      void this.antiEntropy(t.addr).catch(() => this.#st.stats.pushPullFailures++);
    }
    this.#st.after(
      pushPullScale(this.#st.cfg.pushPullInterval, this.#st.nodes.size),
      () => this.tick(),
    );
  }

  /**
   * Try one dead or left member (still in the table, or reaped but remembered): if it answers,
   * its state merges into ours and ours into its, and whichever side was wrongly dead refutes.
   */
  reconnectTick(): void {
    const now = this.#st.clock.now();
    const candidates: string[] = [];
    for (const s of this.#st.nodes.values()) {
      // Left members too: one stopped gracefully and restarted without --seeds (a seed, say)
      // only finds the cluster again if the cluster calls it.
      if ((s.status === "dead" || s.status === "left") && s.id !== this.#st.id) {
        candidates.push(s.addr);
      }
    }
    for (const [id, d] of this.#st.departed) {
      if (now - d.since <= this.#st.cfg.reconnectTimeout && !this.#st.nodes.has(id)) {
        candidates.push(d.addr);
      }
    }
    if (candidates.length) {
      const addr = candidates[Math.floor(this.#st.cfg.rng.next() * candidates.length)];
      void this.antiEntropy(addr).catch(() => {});
    }
    this.#st.after(this.#st.cfg.reconnectInterval, () => this.reconnectTick());
  }

  #localState(join: boolean): PushPullMsg {
    const nodes = [...this.#st.nodes.values()].map(toPush);
    return { type: "pushPull", join, from: this.#st.id, nodes };
  }

  /** Exchange full state with `addr` over a stream, asking the peer to vet our id (a join). */
  async join(addr: string): Promise<void> {
    const s = await this.#st.transport.dialStream(addr, this.#st.cfg.tcpTimeout);
    try {
      s.send(seal(this.#st.cfg, encode(this.#localState(true))));
      const sealed = await s.receive(this.#st.cfg.tcpTimeout).catch((e: Error) => {
        // A member that cannot open our join closes the stream unanswered; "stream closed"
        // alone sent operators hunting for network faults. (A slow one times out instead: no
        // word about keys then.)
        if (!(e instanceof StreamClosedError)) throw e;
        throw new Error(
          `${addr} accepted the connection but closed it without answering our join ` +
            `(${e.message}); a member whose gossip keys differ from ours does that (or one of ` +
            `an older release): check --gossip-keys`,
        );
      });
      const reply = decode(this.#openJoinReply(sealed));
      if (reply.type === "error") {
        if (reply.code === "duplicate-id") throw new DuplicateNodeIdError(reply.message);
        throw new Error(`${addr} refused push-pull: ${reply.message}`);
      }
      if (reply.type !== "pushPull") {
        throw new Error(`${addr} answered push-pull with ${reply.type}`);
      }
      const mine = reply.nodes.find((n) => n.id === this.#st.id);
      if (
        mine && mine.addr !== this.#st.transport.addr &&
        (mine.status === "alive" || mine.status === "suspect")
      ) {
        throw new DuplicateNodeIdError(this.#duplicateMessage(mine.addr));
      }
      this.#st.stats.pushPulls++;
      // Like memberlist, news learned here is re-gossiped even on join: when many members start
      // together, the early ones only hear of later ones through these re-broadcasts.
      if (!this.#st.stopped) this.merge(reply);
    } finally {
      s.close();
    }
  }

  /**
   * Open a seed's answer to our join. A member of another cluster (or release) answers with its
   * header alone: the error names both cluster names (versions), where "stream closed" left the
   * operator guessing.
   */
  #openJoinReply(raw: Uint8Array): Uint8Array {
    try {
      return open(this.#st.cfg, raw);
    } catch (e) {
      if (e instanceof ClusterMismatchError) {
        throw new ClusterMismatchError(
          e.theirs,
          e.ours,
          `the seed is in cluster "${e.theirs}" and this agent in cluster "${e.ours}": ` +
            `agents join only seeds of their own cluster (check --cluster-name and --seeds)`,
        );
      }
      if (e instanceof WireVersionError) {
        throw new WireVersionError(
          e.theirs,
          `the seed speaks gossip wire version ${e.theirs} and this agent version ` +
            `${WIRE_VERSION}: run one release on every member`,
        );
      }
      throw e;
    }
  }

  /**
   * Periodic anti-entropy by digest: send versions only (~20 bytes a member instead of ~140),
   * get back full entries where the views differ plus the ids the peer wants, send those.
   * In steady state the views agree and only the two digests-worth of bytes cross the wire.
   */
  async antiEntropy(addr: string): Promise<void> {
    const s = await this.#st.transport.dialStream(addr, this.#st.cfg.tcpTimeout);
    try {
      const entries: DigestEntry[] = [];
      for (const n of this.#st.nodes.values()) {
        entries.push({
          id: n.id,
          incarnation: n.incarnation,
          status: n.status,
          hash: versionHash(n),
        });
      }
      s.send(seal(this.#st.cfg, encode({ type: "digest", from: this.#st.id, entries })));
      const reply = decode(open(this.#st.cfg, await s.receive(this.#st.cfg.tcpTimeout)));
      if (reply.type === "error") throw new Error(`${addr} refused push-pull: ${reply.message}`);
      if (reply.type !== "delta") throw new Error(`${addr} answered a digest with ${reply.type}`);
      if (reply.want.length) {
        const nodes = reply.want.map((id) => this.#st.nodes.get(id)).filter((n) => n !== undefined)
          .map(toPush);
        s.send(
          seal(
            this.#st.cfg,
            encode({ type: "pushPull", join: false, from: this.#st.id, nodes }),
          ),
        );
      }
      this.#st.stats.pushPulls++;
      if (!this.#st.stopped) {
        this.merge({
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
  #delta(m: DigestMsg): DeltaMsg {
    const theirs = new Map(m.entries.map((e) => [e.id, e]));
    const nodes: PushNodeState[] = [];
    const want: string[] = [];
    for (const n of this.#st.nodes.values()) {
      const e = theirs.get(n.id);
      if (!e || (n.incarnation >= e.incarnation && !sameVersion(n, e))) nodes.push(toPush(n));
    }
    for (const e of m.entries) {
      const n = this.#st.nodes.get(e.id);
      if (!n || (e.incarnation >= n.incarnation && !sameVersion(n, e))) want.push(e.id);
    }
    return { type: "delta", from: this.#st.id, nodes, want };
  }

  #duplicateMessage(holder: string): string {
    return `node id "${this.#st.id}" is already used by a live member at ${holder}; ` +
      `give this node a unique id (--node-id / DLLM_NODE_ID), or stop the other one and retry ` +
      `after it is declared dead`;
  }

  /** Answer one incoming stream: a digest or full push-pull exchange, or a TCP-fallback ping. */
  async serve(s: Stream): Promise<void> {
    // The frame being read, for the drop's warning (a wrong key, or not gossip at all).
    let raw: Uint8Array | undefined;
    try {
      raw = await s.receive(this.#st.cfg.tcpTimeout);
      const m = decode(open(this.#st.cfg, raw));
      if (m.type === "ping") {
        if (m.target !== this.#st.id) return this.#st.drop("misdirected");
        s.send(seal(this.#st.cfg, encode({ type: "ack", seq: m.seq })));
      } else if (m.type === "digest") {
        const d = this.#delta(m);
        s.send(seal(this.#st.cfg, encode(d)));
        if (d.want.length) {
          raw = undefined;
          raw = await s.receive(this.#st.cfg.tcpTimeout);
          const rest = decode(open(this.#st.cfg, raw));
          if (rest.type !== "pushPull") return this.#st.drop("unexpected");
          if (!this.#st.stopped) this.merge(rest);
        }
      } else if (m.type === "pushPull") {
        if (m.join) {
          const conflict = this.#joinConflict(m);
          if (conflict) {
            s.send(
              seal(
                this.#st.cfg,
                encode({ type: "error", code: "duplicate-id", message: conflict }),
              ),
            );
            return;
          }
        }
        s.send(seal(this.#st.cfg, encode(this.#localState(false))));
        if (!this.#st.stopped) this.merge(m);
      } else {
        this.#st.drop("unexpected");
      }
    } catch (e) {
      // Tell a member of another cluster (or release) why, with our header alone, so that its
      // join fails naming both names; the header is in every packet we send anyway.
      if (e instanceof ClusterMismatchError || e instanceof WireVersionError) {
        s.send(labelHeader(this.#st.cfg.clusterName));
      }
      const r = dropReason(e);
      this.#st.drop(r === "internal" ? "stream" : r, e, s.remoteAddr, raw);
    } finally {
      s.close();
    }
  }

  #joinConflict(m: PushPullMsg): string | null {
    const joiner = m.nodes.find((n) => n.id === m.from);
    if (!joiner) return null;
    const have = this.#st.nodes.get(m.from);
    if (!have || have.addr === joiner.addr) return null;
    if (have.status === "alive" || have.status === "suspect") {
      return `node id "${m.from}" is already used by a live member at ${have.addr} (you are ${joiner.addr}); ` +
        `give the joining node a unique id (--node-id / DLLM_NODE_ID)`;
    }
    return null;
  }

  /** Merge a peer's full state (memberlist's mergeState): a remote "dead" only makes us suspect. */
  merge(m: PushPullMsg): void {
    for (const n of m.nodes) {
      switch (n.status) {
        case "alive":
          this.#st.aliveNode(
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
          this.#st.deadNode({ type: "dead", incarnation: n.incarnation, node: n.id, from: n.id });
          break;
        case "dead":
        case "suspect":
          this.#st.suspectNode({
            type: "suspect",
            incarnation: n.incarnation,
            node: n.id,
            from: m.from,
          });
          break;
      }
    }
  }
}
