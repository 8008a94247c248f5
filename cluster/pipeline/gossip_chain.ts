/**
 * ChainProvider over gossip: the stages of a chain are the members whose metadata says they
 * host (loaded and ready) a layer range of the model; the head tiles [0, nLayers) with them.
 *
 * With replicas (several disjoint pipelines, cluster/placement/replicas.ts) each stage also
 * announces the replica it belongs to and its load; the head routes a request to the complete
 * replica with the most free capacity and keeps it there for the request's life (sticky), and
 * a replay after a failure may move it to another replica.
 */
import { fnv1a } from "../fnv.ts";
import type { ChainProvider, StageLink } from "./links.ts";
import { NoPlacementError, stageKey } from "./stage_errors.ts";
import type { PrefixRoutes } from "./prefix_routes.ts";

/** What the chain builder needs to know about one member. */
export interface StageCandidate {
  id: string;
  /** Alive (preferred) or suspect. */
  status: "alive" | "suspect";
  model: string;
  from: number;
  to: number;
  /** Announcement version (gossip incarnation): a re-announced stage is trusted again. */
  version?: number;
  /** The replica the stage belongs to (its first stage's node id); absent: unreplicated. */
  replica?: string;
  /** The stage's load as it last published it. */
  load?: StageLoadView;
  /** Which publication of the load (gossip incarnation): the ledger rebases on a new one. */
  loadVersion?: number;
}

/** A stage's published load (gossip metadata). */
export interface StageLoadView {
  /** Sessions open. */
  sessions: number;
  /** Frames waiting for (or in) the current pass. */
  queued: number;
  /** Sessions it can still open (free KV cache slots). */
  free: number;
  /** Token rows per second it processed recently. */
  tokensPerSecond: number;
}

/** A complete replica a head can route to: its chain and the load its first stage published. */
export interface ReplicaRoute {
  /** Node id of its first stage. */
  id: string;
  chain: StageCandidate[];
  load: StageLoadView;
  /** Which publication of the load this is (see StageCandidate.loadVersion). */
  loadVersion?: number;
}

/**
 * The complete replicas among `candidates`: the stages announcing the same replica, tiled from
 * layer 0 to the last. Every session of a replica passes through its first stage, so that
 * stage's load is the replica's. In id order.
 */
export function replicaRoutes(
  candidates: readonly StageCandidate[],
  model: string,
  nLayers: number,
  exclude: ReadonlySet<string>,
): ReplicaRoute[] {
  const groups = new Map<string, StageCandidate[]>();
  for (const c of candidates) {
    if (!c.replica) continue;
    const g = groups.get(c.replica) ?? [];
    g.push(c);
    groups.set(c.replica, g);
  }
  const out: ReplicaRoute[] = [];
  for (const [id, group] of groups) {
    const chain = tileChain(group, model, nLayers, exclude);
    if (!Array.isArray(chain)) continue;
    const first = chain[0];
    out.push({
      id,
      chain,
      load: first.load ?? { sessions: 0, queued: 0, free: 1, tokensPerSecond: 0 },
      loadVersion: first.loadVersion,
    });
  }
  return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * The replica with the most free capacity: one with a free KV slot before a full one, then one
 * whose stages are all alive before one with a suspect stage (a stage that stopped answering
 * probes, frozen or cut off: a request sent there waits until gossip declares it dead, up to a
 * suspicion timeout, and then replays), then the fewest sessions and queued frames (published
 * load plus what `pending` says this head sent since that publication), then the most recent
 * tokens/s (the faster one), then an order of the replicas that is this head's own (`head`: a
 * hash of its id with each replica's), then the lowest id. Undefined when `routes` is empty.
 *
 * Why a head's own order: each head's ledger counts only its own requests, so heads that each
 * got a request within one load publication (about a second) would all have sent it to the same
 * replica with the lowest id.
 */
export function chooseReplica(
  routes: readonly ReplicaRoute[],
  pending: (r: ReplicaRoute) => number = () => 0,
  head = "",
): ReplicaRoute | undefined {
  let best: ReplicaRoute | undefined;
  let bestKey: number[] = [];
  for (const r of routes) {
    const extra = pending(r);
    const key = [
      hasRoom(r, extra) ? 0 : 1,
      hasSuspect(r) ? 1 : 0,
      busyness(r, extra),
      -r.load.tokensPerSecond,
      head ? fnv1a(`${head}/${r.id}`) : 0,
    ];
    if (!best || less(key, bestKey) || (!less(bestKey, key) && r.id < best.id)) {
      best = r;
      bestKey = key;
    }
  }
  return best;
}

/**
 * Whether a request whose prompt prefix `hinted` served last should go there rather than to
 * `best`, the replica load alone chose: when it has a free slot, no suspect stage, and at most
 * max(2, half of best's) more sessions and queued frames. A cached prefix saves its whole
 * prefill, more than a short wait behind a few more sessions costs; past that margin, load wins
 * (SGLang's cache-aware router balances the same way).
 */
export function preferPrefix(
  hinted: ReplicaRoute,
  best: ReplicaRoute,
  pending: (r: ReplicaRoute) => number = () => 0,
): boolean {
  if (hinted === best) return true;
  if (!hasRoom(hinted, pending(hinted)) || hasSuspect(hinted)) return false;
  const load = busyness(best, pending(best));
  return busyness(hinted, pending(hinted)) <= load + Math.max(2, Math.ceil(load / 2));
}

/** `r` has a free KV slot once the `extra` sessions this head sent since its load are counted. */
function hasRoom(r: ReplicaRoute, extra: number): boolean {
  return r.load.free - extra > 0;
}

/** A stage of `r` stopped answering probes (frozen or cut off). */
function hasSuspect(r: ReplicaRoute): boolean {
  return r.chain.some((c) => c.status === "suspect");
}

/** Sessions and queued frames on `r`: its published load plus the `extra` sent since. */
function busyness(r: ReplicaRoute, extra: number): number {
  return Math.max(0, r.load.sessions + r.load.queued + extra);
}

function less(a: number[], b: number[]): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i];
  return false;
}

/**
 * What this head has routed to each replica: requests running there now, and how many of them
 * the replica's last published load already counts. Gossip publishes load about once a second;
 * without this, every request arriving within that second would go to the same replica.
 */
export class ReplicaLedger {
  private readonly running = new Map<string, number>();
  private readonly base = new Map<string, { version?: number; count: number }>();

  /** Requests this head sent to `r` since its load was published (negative: some ended). */
  pending(r: ReplicaRoute): number {
    const now = this.running.get(r.id) ?? 0;
    const b = this.base.get(r.id);
    if (!b || b.version !== r.loadVersion) {
      // A new publication counts the sessions running now (gossip on loopback or a LAN
      // arrives in milliseconds, far less than a request lasts).
      this.base.set(r.id, { version: r.loadVersion, count: now });
      return 0;
    }
    return now - b.count;
  }

  /** A request starts on replica `id`. */
  start(id: string): void {
    this.running.set(id, (this.running.get(id) ?? 0) + 1);
  }

  /** A request left replica `id` (done, failed over, or cancelled). */
  end(id: string): void {
    const n = (this.running.get(id) ?? 0) - 1;
    if (n > 0) this.running.set(id, n);
    else this.running.delete(id);
  }

  /** Requests this head runs on each replica now. */
  snapshot(): Record<string, number> {
    return Object.fromEntries(this.running);
  }
}

/** Pick stages that tile [0, nLayers): from each layer, the longest range (fewest hops). */
export function tileChain(
  candidates: readonly StageCandidate[],
  model: string,
  nLayers: number,
  exclude: ReadonlySet<string>,
): StageCandidate[] | ChainGap {
  const usable = candidates.filter((c) =>
    c.model === model && !exclude.has(stageKey(c.id, c.version)) && c.to > c.from
  );
  const chain: StageCandidate[] = [];
  let at = 0;
  while (at < nLayers) {
    const starts = usable.filter((c) => c.from === at && c.to <= nLayers);
    if (starts.length === 0) {
      // Up to the next layer a stage starts at: "5..11" when d holds [10, 12) said too much.
      const next = usable.filter((c) => c.from > at).map((c) => c.from);
      return {
        missingFrom: at,
        missingTo: Math.min(nLayers, ...next),
        overlapped: usable.some((c) => c.from < at && c.to > at),
      };
    }
    // Alive before suspect, then the longest range, then the lowest id (deterministic).
    starts.sort((a, b) =>
      (a.status === b.status ? 0 : a.status === "alive" ? -1 : 1) ||
      (b.to - b.from) - (a.to - a.from) ||
      (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
    );
    chain.push(starts[0]);
    at = starts[0].to;
  }
  return chain;
}

/** Where no chain of stages gets past: the first layer no stage starts at, and the next one. */
export interface ChainGap {
  /** The first layer no usable stage starts at. */
  missingFrom: number;
  /** The next layer a stage starts at (or the layer count): the gap is [missingFrom, missingTo). */
  missingTo: number;
  /** A stage holds layer missingFrom inside its range: the ranges do not meet (a plan changing). */
  overlapped: boolean;
}

/**
 * A gap in words: its layers and how they are missing (`is`: the verb for one layer, `are` for
 * several, e.g. "has no live agent" / "have no live agent").
 */
export function describeGap(gap: ChainGap, is: string, are: string): string {
  if (gap.overlapped) {
    return `the stages' layer ranges do not meet at layer ${gap.missingFrom} (a plan in transition)`;
  }
  const last = gap.missingTo - 1;
  return last > gap.missingFrom
    ? `layers ${gap.missingFrom}..${last} ${are}`
    : `layer ${gap.missingFrom} ${is}`;
}

/** Builds chains from a live candidate list, waiting for re-placement when layers are missing. */
export class GossipChainProvider implements ChainProvider {
  constructor(
    private readonly opts: {
      model: string;
      nLayers: number;
      /** Current candidates (from gossip metadata). */
      candidates: () => StageCandidate[];
      /** A link for a chosen candidate (local or remote). */
      link: (c: StageCandidate) => StageLink;
      /** Poll interval while waiting, ms. */
      pollMs?: number;
      /** The placement epoch this head plans with (0n: unchecked). */
      epoch?: () => bigint;
      /** Routing state shared by the head's requests; absent: no replica routing. */
      ledger?: ReplicaLedger;
      /** This head's node id: its own order among replicas equally loaded (chooseReplica). */
      head?: string;
      /**
       * The request's prompt and the head's record of where prompt prefixes went: a new
       * request goes to the replica that served its longest recorded prefix when load allows
       * (preferPrefix), and its prefixes are recorded where it goes. Absent: load alone.
       */
      prefix?: { routes: PrefixRoutes; ids: ArrayLike<number> };
      /**
       * Why no chain of the model can come again (the agent serves another model now, or none):
       * thrown at once instead of waiting for layers no agent will load. Undefined: it may.
       */
      gone?: () => Error | undefined;
    },
  ) {}

  /**
   * Prompt tokens the last chain() routed by a recorded prefix for (0: load chose, or the
   * request stayed on its replica).
   */
  prefixTokens = 0;

  /** The replica this request runs on now (sticky until it fails); undefined: none chosen. */
  replica?: string;

  /** Replicas that refused this request's session as full (busy()), and the last routes. */
  readonly #full = new Set<string>();
  #routes: string[] = [];

  /**
   * The replica just given was full: the next chain goes to another whole one, if any has not
   * refused this request yet. Published load is a second old and counts no other head's
   * requests since, so a replica chosen as the idlest can be full by the time the session opens;
   * before, a new request passed that on as a 429 and a replay waited on the full replica for
   * its recovery timeout while another had room.
   */
  busy(): boolean {
    if (this.replica === undefined) return false;
    this.#full.add(this.replica);
    this.release();
    return this.#routes.some((id) => !this.#full.has(id));
  }

  /** The request ended: it no longer counts against its replica. */
  release(): void {
    if (this.replica !== undefined) this.opts.ledger?.end(this.replica);
    this.replica = undefined;
  }

  /** The model id sessions are opened for. */
  get model(): string {
    return this.opts.model;
  }

  /** The placement epoch this head plans with now. */
  epoch(): bigint {
    return this.opts.epoch?.() ?? 0n;
  }

  /** The prompt's block-prefix keys (PrefixRoutes.keys), hashed once for every choice. */
  #prefixKeys?: number[];

  /** The replica of `pool` a new (or moving) request goes to; its prompt's prefixes follow. */
  #choose(pool: ReplicaRoute[]): ReplicaRoute {
    const pending = (r: ReplicaRoute) => this.opts.ledger?.pending(r) ?? 0;
    const best = chooseReplica(pool, pending, this.opts.head)!;
    const prefix = this.opts.prefix;
    if (!prefix) return best;
    const keys = this.#prefixKeys ??= prefix.routes.keys(prefix.ids);
    const hint = prefix.routes.lookup(keys);
    const hinted = hint && pool.find((r) => r.id === hint.replica);
    const route = hinted && preferPrefix(hinted, best, pending) ? hinted : best;
    if (route === hinted) this.prefixTokens = hint!.tokens;
    prefix.routes.record(keys, route.id);
    return route;
  }

  async chain(
    opts: { exclude: ReadonlySet<string>; timeoutMs: number; signal?: AbortSignal },
  ): Promise<StageLink[]> {
    const deadline = Date.now() + opts.timeoutMs;
    this.prefixTokens = 0;
    for (;;) {
      opts.signal?.throwIfAborted();
      const gone = this.opts.gone?.();
      if (gone) throw gone;
      // A node excluded after a failure may come back (restarted, or back from a false death);
      // it is trusted again only in that new life, which its candidates' versions reflect.
      const candidates = this.opts.candidates();
      const routes = replicaRoutes(candidates, this.opts.model, this.opts.nLayers, opts.exclude);
      this.#routes = routes.map((r) => r.id);
      if (routes.length > 0) {
        const ledger = this.opts.ledger;
        // Replicas that answered full are tried again only when every one has (then the head
        // waits for room on the one with the most, or tells its client).
        const open = routes.filter((r) => !this.#full.has(r.id));
        const pool = open.length > 0 ? open : routes;
        // Sticky: a request stays on its replica while that replica is whole (a stale-epoch retry
        // comes back here); after a stage failure excluded a node, it may move.
        const route = routes.find((r) => r.id === this.replica) ?? this.#choose(pool);
        if (route.id !== this.replica) {
          this.release();
          this.replica = route.id;
          ledger?.start(route.id);
        }
        return route.chain.map((c) => this.opts.link(c));
      }
      // No whole replica (agents that predate replicas, or a plan in transition): any stages
      // that tile the model, as before.
      this.release();
      const tiled = tileChain(candidates, this.opts.model, this.opts.nLayers, opts.exclude);
      if (Array.isArray(tiled)) return tiled.map((c) => this.opts.link(c));
      if (Date.now() >= deadline) {
        // Only stages that failed under this request hold the missing layers, and gossip still
        // sees them: "no live agent" blamed the cluster's size for what is a fault between
        // agents (a link broken while gossip goes around it).
        const held = tiled.overlapped
          ? []
          : candidates.filter((c) =>
            c.model === this.opts.model && c.status === "alive" && c.from <= tiled.missingFrom &&
            c.to > tiled.missingFrom && opts.exclude.has(stageKey(c.id, c.version))
          ).map((c) => c.id);
        throw new NoPlacementError(
          `no placement for ${this.opts.model}: ` +
            (held.length
              ? describeGap(tiled, "is held", "are held") +
                ` only by ${held.join(", ")}, which failed under this request although gossip ` +
                `still sees ${held.length > 1 ? "them" : "it"} alive (a network fault between ` +
                `agents?)`
              : describeGap(tiled, "has no live agent", "have no live agent") +
                (tiled.overlapped ? "" : " (start more agents, or raise --memory-budget)")),
        );
      }
      await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 100));
    }
  }
}
