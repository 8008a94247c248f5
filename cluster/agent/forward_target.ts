/**
 * Where an agent that serves no model (`--no-model`) passes a request on to: a live member that
 * serves the model the request names, the least busy by its gossip load plus the requests this
 * agent already sent it, equally busy ones taken in turn so they share the traffic. The choice
 * is a pure function of the member list; {@linkcode ForwardTargets} keeps the counts it reads.
 *
 * @module
 */
import type { Member } from "../gossip/mod.ts";
import { ModelId } from "../model_id.ts";

/**
 * The header (HTTP) and metadata key (gRPC) an agent adds to a request it forwards, naming
 * itself. An agent never forwards a request that carries it: two gateways whose views of the
 * cluster disagree would otherwise pass a request back and forth.
 */
export const FORWARDED_HEADER = "x-dllm-forwarded-by";

/** What a choice leaves out or takes into account. */
export interface TargetOptions {
  /** Node ids not to choose (this agent, one that just failed the request, untrusted ones). */
  exclude?: ReadonlySet<string>;
  /** Requests this agent has open on a member now (added to its published load). */
  inFlight?: (id: string) => number;
  /** A counter that advances each choice: equally busy members are taken in turn by it. */
  turn?: number;
  /** Only members that serve the OpenAI HTTP API (announce an httpPort). */
  http?: boolean;
}

/**
 * The members that can head a request for `model` ("" = any): alive (a suspect one may be
 * frozen), announcing a served model and no stage failure. Where none serves the name but
 * others serve a model, those: the agent reached answers NOT_FOUND naming what it serves, as
 * a serving agent asked directly would.
 */
export function servingMembers(
  members: readonly Member[],
  model: string,
  exclude: ReadonlySet<string> = new Set(),
): Member[] {
  const serving = members.filter((m) =>
    m.status === "alive" && !exclude.has(m.id) && !!m.meta?.model && !m.meta.stageError
  );
  if (!model) return serving;
  const named = serving.filter((m) => ModelId.parse(m.meta!.model!).matches(model));
  return named.length ? named : serving;
}

/**
 * The member to forward a request for `model` to, or undefined when none serves it: one with a
 * free KV slot before one without, then the fewest open sessions and queued frames (its gossip
 * `load` plus `inFlight`), then the most free slots; ties go round by `turn`.
 */
export function chooseTarget(
  members: readonly Member[],
  model: string,
  opts: TargetOptions = {},
): Member | undefined {
  const inFlight = opts.inFlight ?? (() => 0);
  const candidates = servingMembers(members, model, opts.exclude)
    .filter((m) => !opts.http || (m.meta!.httpPort ?? 0) > 0);
  const keyOf = (m: Member): number[] => {
    const load = m.meta!.load;
    const extra = inFlight(m.id);
    // A member hosting no stage publishes no load: it heads requests all the same (its chain
    // runs on others), and counts as idle but for what this agent sent it.
    const free = load ? load.free - extra : Infinity;
    return [free > 0 ? 0 : 1, (load ? load.sessions + load.queued : 0) + extra, -free];
  };
  let best: { key: number[]; members: Member[] } | undefined;
  for (const m of candidates) {
    const key = keyOf(m);
    const order = best ? compare(key, best.key) : -1;
    if (order < 0) best = { key, members: [m] };
    else if (order === 0) best!.members.push(m);
  }
  if (!best) return undefined;
  const ties = best.members.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return ties[(opts.turn ?? 0) % ties.length];
}

function compare(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  return 0;
}

/** This agent's forwarded requests open per member, and the turn of equal choices. */
export class ForwardTargets {
  readonly #open = new Map<string, number>();
  #turn = 0;

  constructor(
    /** This agent's node id: never a target. */
    private readonly self: string,
    /** The gossip members now. */
    private readonly members: () => readonly Member[],
    /** Members not to forward to (mTLS refused their certificate). */
    private readonly untrusted: ReadonlyMap<string, string> = new Map(),
  ) {}

  /** Whether any other live member serves a model (forwarding has somewhere to go). */
  any(): boolean {
    return servingMembers(this.members(), "", this.#excluded()).length > 0;
  }

  /** The member to send a request for `model` to, leaving out `tried`; see chooseTarget. */
  choose(model: string, tried: ReadonlySet<string> = new Set(), http = false): Member | undefined {
    return chooseTarget(this.members(), model, {
      exclude: this.#excluded(tried),
      inFlight: (id) => this.#open.get(id) ?? 0,
      turn: this.#turn++,
      http,
    });
  }

  /** A request was sent to `id`; call the returned function when it ends. */
  open(id: string): () => void {
    this.#open.set(id, (this.#open.get(id) ?? 0) + 1);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      const left = (this.#open.get(id) ?? 1) - 1;
      if (left > 0) this.#open.set(id, left);
      else this.#open.delete(id);
    };
  }

  #excluded(tried: ReadonlySet<string> = new Set()): Set<string> {
    return new Set([this.self, ...this.untrusted.keys(), ...tried]);
  }
}
