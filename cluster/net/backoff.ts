/**
 * Accepting connections through a burst of failures (EMFILE: the process is out of file
 * descriptors), as Go's net/http does: retry after 5 ms, doubling to 1 s, instead of ending the
 * accept loop; one warning when a burst starts and one, with the count, when it ends.
 *
 * @module
 */

/** A warning sink: message and structured fields (the agent's logger shape). */
export type Warn = (msg: string, fields?: Record<string, unknown>) => void;

/** The first retry's delay after a failed accept (ms); Go's net/http uses the same. */
export const ACCEPT_BACKOFF_MIN_MS = 5;
/** The longest delay between retries (ms). */
export const ACCEPT_BACKOFF_MAX_MS = 1000;

/**
 * A JSON line on stderr in the agent's log format: listeners started without a logger (the
 * agent passes none to the metrics and RPC listeners) must still say when they cannot accept.
 */
export const stderrWarn: Warn = (msg, fields) => {
  console.error(JSON.stringify({ t: new Date().toISOString(), level: "warn", msg, ...fields }));
};

/** The delays of one listener's accept failures, and the warnings that bracket a burst. */
export class AcceptBackoff {
  #delay = 0;
  #failures = 0;
  #since = 0;

  /** @param name the listener, as users know it ("metrics listener on 127.0.0.1:9090") */
  constructor(readonly name: string, private readonly warn: Warn = stderrWarn) {}

  /** Failures in the current burst (0: accepting). */
  get failures(): number {
    return this.#failures;
  }

  /** An accept failed with `e`: the ms to wait before the next try. Warns at a burst's start. */
  failed(e: unknown): number {
    if (this.#failures++ === 0) {
      this.#since = Date.now();
      this.warn(`${this.name}: cannot accept connections; retrying from 5 ms, doubling to 1 s`, {
        error: String((e as Error)?.message ?? e),
      });
    }
    this.#delay = this.#delay === 0
      ? ACCEPT_BACKOFF_MIN_MS
      : Math.min(2 * this.#delay, ACCEPT_BACKOFF_MAX_MS);
    return this.#delay;
  }

  /** An accept succeeded: a burst, if one was on, is over (said with its count and length). */
  ok(): void {
    if (this.#failures === 0) return;
    this.warn(`${this.name}: accepting connections again`, {
      failed_accepts: this.#failures,
      ms: Date.now() - this.#since,
    });
    this.#failures = 0;
    this.#delay = 0;
  }
}

/**
 * Accept from `listener` until it is closed, handing each connection to `onConn`. A failed
 * accept is retried after a backoff: `for await (const c of listener)` ends on the first one
 * (an EMFILE), after which the port is never served again.
 */
export async function acceptLoop<C extends Deno.Conn>(
  listener: Deno.Listener<C>,
  onConn: (conn: C) => void,
  backoff: AcceptBackoff,
  closed: () => boolean,
): Promise<void> {
  for (;;) {
    let conn: C;
    try {
      conn = await listener.accept();
    } catch (e) {
      if (closed() || e instanceof Deno.errors.BadResource) return;
      await new Promise((r) => setTimeout(r, backoff.failed(e)));
      if (closed()) return;
      continue;
    }
    backoff.ok();
    onConn(conn);
  }
}
