/** A StageLink to a stage in the same process (no RPC): the head's own stage, or the engine's. */
import type { SessionLink, SessionOpen, StageLink } from "./links.ts";
import { StaleEpochError } from "./stage_errors.ts";
import type { StageHost } from "./stage_host.ts";
import { type LinkFactory, openChainSession, staleRange } from "./chain_session.ts";

/** What a local stage needs to reach the stages after it and to check the epoch. */
export interface LocalLinkOptions {
  /** Announcement version of this stage (see StageLink.version). */
  version?: number;
  /** This agent's placement epoch (default: none, unchecked). */
  epoch?: () => bigint;
  /** Links to the stages after this one (default: none; the stage must be the tail). */
  linkTo?: LinkFactory;
  /** Rows per pipelined prompt chunk (default: chain_session.ts's PREFILL_CHUNK_ROWS). */
  chunkRows?: number;
  /**
   * The range the chain chose this stage by (its announcement); a host that runs another by
   * the time a session opens refuses it as a stale placement. Default: whatever the host runs.
   */
  chosen?: { from: number; to: number };
  /**
   * The host the agent runs now: one that replaced this link's (a reload after the chain was
   * read; the old one is freed only when its sessions end) refuses new sessions as stale.
   */
  current?: () => StageHost | undefined;
}

/** Direct calls into a StageHost, which forwards to the next stage itself. */
export class LocalStageLink implements StageLink {
  /** In the head's own process. */
  readonly local = true;
  constructor(
    readonly nodeId: string,
    private readonly host: StageHost,
    private readonly opts: LocalLinkOptions = {},
  ) {}

  /** Announcement version of this stage. */
  get version(): number | undefined {
    return this.opts.version;
  }

  get from(): number {
    return this.opts.chosen?.from ?? this.host.range.from;
  }

  get to(): number {
    return this.opts.chosen?.to ?? this.host.range.to;
  }

  openSession(open: SessionOpen): Promise<SessionLink> {
    const { from, to } = this.host.range;
    const current = this.opts.current;
    if (this.host.retired || (current && current() !== this.host)) {
      // The agent loaded a new stage after the chain was read (this link holds the old one,
      // freed, or kept only for the sessions it has): as a stale placement, the head reads the
      // chain again and finds the new stage.
      return Promise.reject(
        new StaleEpochError(
          `${this.nodeId}'s stage [${from}, ${to}) was replaced; re-read the placement`,
          this.nodeId,
        ),
      );
    }
    if (open.model && open.model !== this.host.model) {
      // The agent serves another model since the chain was read (models deploy): its layers
      // would read the request's token ids with another vocabulary, as a remote stage refuses.
      return Promise.reject(
        new StaleEpochError(
          `${this.nodeId} serves model ${this.host.model}, not ${open.model}; re-read the placement`,
          this.nodeId,
        ),
      );
    }
    // As forward_service.ts refuses a remote opening: the head reads the chain again.
    const stale = staleRange(this.nodeId, this.host.range, this);
    if (stale) return Promise.reject(stale);
    return openChainSession(this.host, open, {
      nodeId: this.nodeId,
      epoch: this.opts.epoch ?? (() => 0n),
      linkTo: this.opts.linkTo ?? ((hop) => {
        throw new Error(`no link to ${hop.nodeId}: an in-process chain has one stage`);
      }),
      chunkRows: this.opts.chunkRows,
    });
  }
}
