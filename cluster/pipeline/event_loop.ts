/**
 * Yielding to the event loop between compute passes.
 *
 * A stage pass on the WASM backend is synchronous, and the promises between passes resolve as
 * microtasks, so a generation served from this process never lets sockets run: measured on
 * the 110M model, a 64-token completion held a `/metrics` scrape for 770 ms and its own SSE
 * chunks until the end. Gossip acks wait the same way, so a long generation can get an agent
 * declared dead. Deno's `setImmediate` does not help (it runs before I/O is polled); a timer
 * does, but costs 1–2 ms per turn. An async op that completes at once (an empty digest, about
 * 50 µs) makes the loop poll I/O; taking it once every `budgetMs` of compute keeps the cost
 * under a few percent while bounding how long I/O waits.
 *
 * Output streamed to clients from this process (an RPC Generate stream, an SSE response) is
 * written by a chain of promises and immediates after the head hands on each token. An I/O poll
 * alone does not run that chain to the socket, so when the next pass starts at once the token
 * waits for the pass after it: traced on the 110M model, a 3-agent head's client got each token
 * 3.9 ms (p50) after the head had it, one or two passes late. An immediate first lets the writes
 * go out (0.9 ms p50, most of it the client's own reading). Passes take the immediate only while
 * a client streams from this process (`flush`), so stages that only compute for others keep
 * their lean turn.
 */
import { setImmediate } from "node:timers";

const EMPTY = new Uint8Array(0);

/** Hands the event loop a turn between passes: cheaply always, with I/O at least every budget. */
export class EventLoopYield {
  #last = performance.now();

  /** @param budgetMs longest stretch of compute before sockets get a turn */
  constructor(readonly budgetMs = 2) {}

  /**
   * The turn before the first pass after being idle: the event loop has just polled I/O (it
   * delivered the frame that woke us), so only let the frames of the same poll join — an
   * immediate — and count the budget from now. With `alone` (no other session could send a
   * frame) nothing can join: no turn, the budget counts from now. An immediate there cost
   * 50–65 µs per stage per decode step in an agent; a stage whose process streams to clients
   * is never `alone` (their writes need the immediate).
   */
  async afterIdle(alone = false): Promise<void> {
    if (!alone) await immediate();
    this.#last = performance.now();
  }

  /**
   * Let other work run; at least every `budgetMs`, let the event loop poll I/O too. With
   * `flush` (clients stream from this process), writes queued since the last pass go out first.
   */
  async turn(flush = false): Promise<void> {
    const now = performance.now();
    if (now - this.#last < this.budgetMs) {
      // Microtasks and immediates only: frames queued meanwhile still join the next pass.
      await immediate();
      return;
    }
    if (flush) await immediate();
    // Any async op settles only after the event loop has polled sockets; this one needs no
    // permission and no file system.
    await crypto.subtle.digest("SHA-1", EMPTY);
    this.#last = performance.now();
  }
}

/** A turn of the event loop's immediates (with the microtasks before them). */
function immediate(): Promise<void> {
  return new Promise<void>((r) => setImmediate(r));
}
