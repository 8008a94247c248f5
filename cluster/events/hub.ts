/**
 * The agent's event hub: a bounded history of cluster events (membership, placement, requests,
 * metrics) and the live subscribers that ClusterService.StreamUpdates feeds from. Publishing
 * never blocks: a subscriber that reads too slowly loses its oldest queued events, and the
 * sequence numbers of its stream show the gap.
 *
 * @example
 * ```ts
 * const hub = new EventHub({ history: 256 });
 * const sub = hub.subscribe();
 * hub.publish({ case: "request", value: create(RequestEventSchema, { requestId: "r1" }) });
 * for await (const e of sub) console.log(e.sequence, e.event.case);
 * ```
 *
 * @module
 */
import type { StreamUpdatesResponse } from "../../proto/mod.ts";
import { UpdateKind } from "../../proto/mod.ts";

/** The payload of one event: the `event` oneof of StreamUpdatesResponse. */
export type ClusterEvent = Exclude<StreamUpdatesResponse["event"], { case: undefined }>;

/** An event as the hub keeps it: payload plus when it happened (Unix ms). */
export interface StampedEvent {
  event: ClusterEvent;
  timestampUnixMs: number;
}

/** An event delivered to one subscriber, numbered per subscription. */
export interface DeliveredEvent extends StampedEvent {
  /** 1, 2, 3, … per subscription; a jump means events were dropped for this subscriber. */
  sequence: number;
}

/** The UpdateKind a payload belongs to (for StreamUpdatesRequest.kinds filters). */
export function kindOf(event: ClusterEvent): UpdateKind {
  switch (event.case) {
    case "membership":
      return UpdateKind.MEMBERSHIP;
    case "placement":
      return UpdateKind.PLACEMENT;
    case "request":
      return UpdateKind.REQUEST;
    case "metrics":
      return UpdateKind.METRICS;
    case "transfer":
      return UpdateKind.TRANSFER;
  }
}

/** Options of {@linkcode EventHub}. */
export interface EventHubOptions {
  /** Events kept for late subscribers (ring buffer). Default 256. */
  history?: number;
  /** Events queued per subscriber before the oldest are dropped. Default 1024. */
  queue?: number;
  /** Clock, Unix ms (tests pass a fake one). */
  now?: () => number;
}

/** One live subscription: an async iterator of events; `close()` ends it. */
export class Subscription implements AsyncIterableIterator<DeliveredEvent> {
  private readonly queue: DeliveredEvent[] = [];
  private wake?: () => void;
  private closed = false;
  private seq = 0;
  /** Events dropped because this subscriber read too slowly. */
  dropped = 0;

  /** @internal made by EventHub.subscribe */
  constructor(
    private readonly limit: number,
    private readonly filter: (e: ClusterEvent) => boolean,
    private readonly detach: (s: Subscription) => void,
  ) {}

  /** @internal called by the hub for each event */
  deliver(e: StampedEvent): void {
    if (this.closed || !this.filter(e.event)) return;
    this.seq++;
    if (this.queue.length >= this.limit) {
      this.queue.shift();
      this.dropped++;
    }
    this.queue.push({ ...e, sequence: this.seq });
    this.wake?.();
  }

  /** Stop receiving; a pending `next()` resolves as done. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.detach(this);
    this.wake?.();
  }

  async next(): Promise<IteratorResult<DeliveredEvent>> {
    for (;;) {
      const e = this.queue.shift();
      if (e) return { value: e, done: false };
      if (this.closed) return { value: undefined, done: true };
      await new Promise<void>((r) => (this.wake = r));
      this.wake = undefined;
    }
  }

  return(): Promise<IteratorResult<DeliveredEvent>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<DeliveredEvent> {
    return this;
  }
}

/** Bounded history plus fan-out to subscribers. */
export class EventHub {
  private readonly ring: (StampedEvent | undefined)[];
  private head = 0;
  private size = 0;
  private readonly subs = new Set<Subscription>();
  private readonly queueLimit: number;
  private readonly now: () => number;

  constructor(opts: EventHubOptions = {}) {
    this.ring = new Array(Math.max(1, opts.history ?? 256));
    this.queueLimit = Math.max(1, opts.queue ?? 1024);
    this.now = opts.now ?? Date.now;
  }

  /** Live subscribers. */
  get subscribers(): number {
    return this.subs.size;
  }

  /** Record an event and hand it to every subscriber. Never blocks, never throws. */
  publish(event: ClusterEvent): StampedEvent {
    const stamped = { event, timestampUnixMs: this.now() };
    this.ring[(this.head + this.size) % this.ring.length] = stamped;
    if (this.size < this.ring.length) this.size++;
    else this.head = (this.head + 1) % this.ring.length;
    for (const s of this.subs) s.deliver(stamped);
    return stamped;
  }

  /** The kept history, oldest first. */
  recent(): StampedEvent[] {
    const out: StampedEvent[] = [];
    for (let i = 0; i < this.size; i++) out.push(this.ring[(this.head + i) % this.ring.length]!);
    return out;
  }

  /**
   * Subscribe to events published from now on. `kinds` filters (empty = all); `prefix` events
   * (history, a snapshot) are delivered first, numbered like the rest.
   */
  subscribe(opts: { kinds?: UpdateKind[]; prefix?: StampedEvent[] } = {}): Subscription {
    const kinds = new Set<UpdateKind>(
      (opts.kinds ?? []).filter((k) => k !== UpdateKind.UNSPECIFIED),
    );
    const filter = (e: ClusterEvent) => kinds.size === 0 || kinds.has(kindOf(e));
    const sub = new Subscription(
      Math.max(this.queueLimit, opts.prefix?.length ?? 0),
      filter,
      (s) => this.subs.delete(s),
    );
    for (const e of opts.prefix ?? []) sub.deliver(e);
    this.subs.add(sub);
    return sub;
  }

  /** End every subscription (the agent is stopping). */
  closeAll(): void {
    for (const s of [...this.subs]) s.close();
  }
}
