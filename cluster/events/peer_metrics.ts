/**
 * Load samples of the other members for viewers of StreamUpdates: while anyone watches, the
 * answering agent keeps one NodeService.StreamMetrics stream open to each live peer and relays
 * the samples, so a dashboard needs one connection, not one per node. However many viewers
 * watch, each peer is asked for one stream ({@linkcode PeerMetricsRelay}): a stream per viewer
 * and peer let every viewer an agent accepted multiply the streams it opened to every peer.
 *
 * @example
 * ```ts
 * const relay = new PeerMetricsRelay({ peers });
 * const stop = relay.subscribe((m) => deliver(m));
 * // … later
 * stop();
 * ```
 *
 * @module
 */
import { createClient, type Transport } from "@connectrpc/connect";
import { type NodeMetrics, NodeService } from "../../proto/mod.ts";

/** A peer the watcher can dial. */
export interface PeerHandle {
  id: string;
  /** A (cached) transport to the peer's RPC port. */
  transport: () => Promise<Transport>;
}

/** Options of {@linkcode PeerMetricsWatcher}. */
export interface PeerMetricsOptions {
  /** The live peers now (this node excluded). */
  peers: () => PeerHandle[];
  onSample: (m: NodeMetrics) => void;
  /** Stops every stream. */
  signal: AbortSignal;
  /** Sample interval asked of each peer. Default 1000 ms. */
  intervalMs?: number;
  /** How often the peer list is re-read (joins, deaths). Default 1000 ms. */
  refreshMs?: number;
}

/** Options of {@linkcode PeerMetricsRelay}. */
export type PeerMetricsRelayOptions = Omit<PeerMetricsOptions, "onSample" | "signal">;

/**
 * One {@linkcode PeerMetricsWatcher} shared by every viewer: started with the first subscriber,
 * stopped with the last, each sample handed to all of them.
 */
export class PeerMetricsRelay {
  private readonly viewers = new Set<(m: NodeMetrics) => void>();
  private stop?: AbortController;

  constructor(private readonly opts: PeerMetricsRelayOptions) {}

  /** Viewers subscribed now. */
  get subscribers(): number {
    return this.viewers.size;
  }

  /** Receive every peer's samples until the returned function is called. */
  subscribe(onSample: (m: NodeMetrics) => void): () => void {
    // A function of its own per call, so one viewer subscribing twice is two viewers.
    const viewer = (m: NodeMetrics) => onSample(m);
    this.viewers.add(viewer);
    if (!this.stop) {
      const stop = new AbortController();
      this.stop = stop;
      new PeerMetricsWatcher({
        ...this.opts,
        signal: stop.signal,
        onSample: (m) => {
          for (const v of this.viewers) v(m);
        },
      }).start();
    }
    return () => {
      if (!this.viewers.delete(viewer) || this.viewers.size > 0) return;
      this.stop?.abort();
      this.stop = undefined;
    };
  }
}

/** Keeps one metrics stream per live peer while its signal is not aborted. */
export class PeerMetricsWatcher {
  private readonly streams = new Map<string, AbortController>();
  private timer?: ReturnType<typeof setInterval>;

  constructor(private readonly opts: PeerMetricsOptions) {}

  /** Begin watching; ends by itself when the signal aborts. */
  start(): void {
    if (this.opts.signal.aborted) return;
    this.refresh();
    this.timer = setInterval(() => this.refresh(), this.opts.refreshMs ?? 1000);
    this.opts.signal.addEventListener("abort", () => {
      clearInterval(this.timer);
      for (const c of this.streams.values()) c.abort();
      this.streams.clear();
    }, { once: true });
  }

  /** Peers being watched now. */
  get watching(): string[] {
    return [...this.streams.keys()];
  }

  private refresh(): void {
    const live = new Map(this.opts.peers().map((p) => [p.id, p]));
    for (const [id, c] of this.streams) {
      if (!live.has(id)) {
        c.abort();
        this.streams.delete(id);
      }
    }
    for (const [id, peer] of live) {
      if (this.streams.has(id)) continue;
      const c = new AbortController();
      this.streams.set(id, c);
      this.watch(peer, c);
    }
  }

  private async watch(peer: PeerHandle, c: AbortController): Promise<void> {
    try {
      const client = createClient(NodeService, await peer.transport());
      for await (
        const r of client.streamMetrics(
          { intervalMs: this.opts.intervalMs ?? 1000 },
          { signal: c.signal },
        )
      ) {
        if (r.metrics) this.opts.onSample(r.metrics);
      }
    } catch {
      // The peer went away or refused; the next refresh dials it again if it is still live.
    }
    if (this.streams.get(peer.id) === c) this.streams.delete(peer.id);
  }
}
