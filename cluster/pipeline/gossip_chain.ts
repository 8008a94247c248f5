/**
 * ChainProvider over gossip: the stages of a chain are the members whose metadata says they
 * host (loaded and ready) a layer range of the model; the head tiles [0, nLayers) with them.
 */
import { type ChainProvider, NoPlacementError, stageKey, type StageLink } from "./head.ts";

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
}

/** Pick stages that tile [0, nLayers): from each layer, the longest range (fewest hops). */
export function tileChain(
  candidates: readonly StageCandidate[],
  model: string,
  nLayers: number,
  exclude: ReadonlySet<string>,
): StageCandidate[] | { missingFrom: number } {
  const usable = candidates.filter((c) =>
    c.model === model && !exclude.has(stageKey(c.id, c.version)) && c.to > c.from
  );
  const chain: StageCandidate[] = [];
  let at = 0;
  while (at < nLayers) {
    const starts = usable.filter((c) => c.from === at && c.to <= nLayers);
    if (starts.length === 0) return { missingFrom: at };
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
    },
  ) {}

  /** The model id sessions are opened for. */
  get model(): string {
    return this.opts.model;
  }

  /** The placement epoch this head plans with now. */
  epoch(): bigint {
    return this.opts.epoch?.() ?? 0n;
  }

  async chain(opts: { exclude: ReadonlySet<string>; timeoutMs: number }): Promise<StageLink[]> {
    const deadline = Date.now() + opts.timeoutMs;
    for (;;) {
      // A node excluded after a failure may come back (restarted); it is trusted again only
      // once gossip has seen it alive with its range again, which the candidate list reflects.
      const tiled = tileChain(
        this.opts.candidates(),
        this.opts.model,
        this.opts.nLayers,
        opts.exclude,
      );
      if (Array.isArray(tiled)) return tiled.map((c) => this.opts.link(c));
      if (Date.now() >= deadline) {
        throw new NoPlacementError(
          `no placement: layers ${tiled.missingFrom}..${
            this.opts.nLayers - 1
          } of ${this.opts.model} ` +
            `have no live agent (start more agents, or raise --memory-budget)`,
        );
      }
      await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 100));
    }
  }
}
