/**
 * Bounds on one listener's connections: how many may be open, and how long one may stay open
 * without a request. A flood of idle sockets then costs a listener at most its cap, and a socket
 * that sends nothing (no request headers, no HTTP/2 stream, no gossip frame) is closed after
 * `silentMs`; a connection with a request or stream in flight is never cut, however long it runs.
 *
 * @example
 * ```ts
 * const guard = new ConnectionGuard<net.Socket>(
 *   { maxConnections: 256, silentMs: 10_000, idleMs: 60_000 },
 *   (s) => s.destroy(),
 * );
 * server.on("connection", (s) => {
 *   if (!guard.admit(s)) return s.destroy();
 *   s.once("close", () => guard.release(s));
 * });
 * ```
 * @module
 */

/** The bounds of one listener. */
export interface ConnectionLimits {
  /**
   * Most connections open at once. At the cap a new one evicts the oldest that has no request
   * in flight (those that never sent one first); when every one is busy it is closed at once.
   */
  maxConnections: number;
  /** A connection that sends no request within this many ms of opening is closed. */
  silentMs: number;
  /** A connection with no request in flight for this many ms is closed; 0: never. */
  idleMs: number;
}

/** Why the guard closed a connection. */
export type CloseReason = "silent" | "idle" | "evicted";

/** What a guard did, for tests and logs. */
export interface GuardCounts {
  /** New connections closed at the cap because every open one was busy. */
  refused: number;
  /** Connections closed to make room for a new one. */
  evicted: number;
  /** Connections closed for sending nothing, or for idling, past their bound. */
  timedOut: number;
}

interface Entry {
  /** Requests or streams in flight. */
  active: number;
  /** Whether it ever sent one (a silent connection is evicted before an idle one). */
  used: boolean;
  timer?: ReturnType<typeof setTimeout>;
}

/** Counts a listener's connections against {@linkcode ConnectionLimits}. */
export class ConnectionGuard<C> {
  /** Open connections, oldest first. */
  readonly #open = new Map<C, Entry>();
  /** What the guard did so far. */
  readonly counts: GuardCounts = { refused: 0, evicted: 0, timedOut: 0 };

  /** @param limits the bounds @param close ends a connection the guard gives up on */
  constructor(
    readonly limits: ConnectionLimits,
    private readonly close: (conn: C, why: CloseReason) => void,
  ) {}

  /** Connections open now. */
  get size(): number {
    return this.#open.size;
  }

  /**
   * A new connection: true when it may be served (its silence timer runs from now); false when
   * the listener is full of busy connections and the caller must close it.
   */
  admit(conn: C): boolean {
    if (this.#open.size >= this.limits.maxConnections) {
      const victim = this.#oldest((e) => !e.used) ?? this.#oldest((e) => e.active === 0);
      if (victim === undefined) {
        this.counts.refused++;
        return false;
      }
      this.counts.evicted++;
      this.#drop(victim, "evicted");
    }
    const entry: Entry = { active: 0, used: false };
    this.#open.set(conn, entry);
    this.#arm(conn, entry, this.limits.silentMs, "silent");
    return true;
  }

  /** A request or stream started on `conn`: it is not idle until as many `done` calls. */
  busy(conn: C): void {
    const e = this.#open.get(conn);
    if (!e) return;
    e.active++;
    e.used = true;
    clearTimeout(e.timer);
  }

  /** A request or stream of `conn` ended; with none left, its idle timer starts. */
  done(conn: C): void {
    const e = this.#open.get(conn);
    if (!e || e.active === 0) return;
    if (--e.active === 0) this.#arm(conn, e, this.limits.idleMs, "idle");
  }

  /** `conn` closed: forget it. */
  release(conn: C): void {
    clearTimeout(this.#open.get(conn)?.timer);
    this.#open.delete(conn);
  }

  /** Forget every connection and stop their timers (the listener is closing). */
  clear(): void {
    for (const e of this.#open.values()) clearTimeout(e.timer);
    this.#open.clear();
  }

  #oldest(pick: (e: Entry) => boolean): C | undefined {
    for (const [c, e] of this.#open) if (pick(e)) return c;
    return undefined;
  }

  #arm(conn: C, e: Entry, ms: number, why: CloseReason): void {
    clearTimeout(e.timer);
    if (ms <= 0) return;
    e.timer = setTimeout(() => {
      this.counts.timedOut++;
      this.#drop(conn, why);
    }, ms);
  }

  #drop(conn: C, why: CloseReason): void {
    this.release(conn);
    try {
      this.close(conn, why);
    } catch { /* already closed */ }
  }
}
