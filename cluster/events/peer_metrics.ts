/**
 * Load samples of the other members for a viewer of StreamUpdates: while someone watches, the
 * answering agent keeps one NodeService.StreamMetrics stream open to each live peer and relays
 * the samples, so a dashboard needs one connection, not one per node.
 *
 * @example
 * ```ts
 * const w = new PeerMetricsWatcher({ peers, onSample: (m) => deliver(m), signal });
 * w.start();
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
