/**
 * A hop's answer under watch. Gossip ends the streams of a stage it declares dead, and TCP ends
 * one whose peer resets it; neither sees a link broken between two stages while gossip still
 * reaches both through a third (a gray failure: a route or firewall rule on one path). Waiting
 * on such a hop lasted until the kernel gave up retransmitting: 16 minutes in one test, the
 * client's stream kept open by keep-alive comments. So a hop that has not answered for a while
 * asks the stage's RPC port, over the same path, whether it is there: a stage that answers is
 * busy (a long prompt chunk, a queue) and the wait goes on; one that does not is taken as gone,
 * and the head re-places and replays as for a dead stage.
 *
 * The probe is an RPC answered by the stage's event loop, which a pass holds for as long as it
 * runs; gossip already declares an agent whose loop is held for seconds suspect, so the bounds
 * below are looser than what the cluster tolerates anyway.
 *
 * @module
 */

/** How often a waiting hop probes, and how long one probe may take. */
export interface HopWatch {
  /** Ms without an answer before each probe; default 5 s. */
  everyMs: number;
  /** Ms a probe may take before the stage counts as unreachable; default 10 s. */
  probeMs: number;
}

/** The default watch: a broken link is found in about 15 s. */
export const DEFAULT_HOP_WATCH: HopWatch = { everyMs: 5_000, probeMs: 10_000 };

/** A stage that neither answered a frame nor a probe. */
export class HopSilentError extends Error {
  override name = "HopSilentError";
}

/**
 * Wait for `answer`; each `watch.everyMs` it has not come, run `probe` (its signal aborts after
 * `watch.probeMs`). A probe that fails or times out rejects with {@linkcode HopSilentError}
 * naming how long the hop waited and why the probe failed; the answer, if it comes later, is
 * dropped.
 */
export function watchAnswer<T>(
  answer: Promise<T>,
  probe: (signal: AbortSignal) => Promise<unknown>,
  watch: HopWatch = DEFAULT_HOP_WATCH,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t0 = performance.now();
    let done = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let probing: AbortController | undefined;
    const end = () => {
      done = true;
      clearTimeout(timer);
      probing?.abort();
    };
    const check = async () => {
      probing = new AbortController();
      const bound = setTimeout(() => probing?.abort(), watch.probeMs);
      let why: string | undefined;
      try {
        await probe(probing.signal);
        if (probing.signal.aborted) why = `no answer within ${watch.probeMs} ms`;
      } catch (e) {
        why = probing.signal.aborted
          ? `no answer within ${watch.probeMs} ms`
          : (e as Error)?.message ?? String(e);
      } finally {
        clearTimeout(bound);
      }
      if (done) return;
      if (why === undefined) {
        timer = setTimeout(check, watch.everyMs);
        return;
      }
      end();
      const waited = Math.round((performance.now() - t0) / 1000);
      reject(
        new HopSilentError(
          `no answer for ${waited} s and its RPC port did not answer a health check either ` +
            `(${why}): the link to it is broken, or it hangs`,
        ),
      );
    };
    timer = setTimeout(check, watch.everyMs);
    answer.then(
      (v) => {
        if (done) return;
        end();
        resolve(v);
      },
      (e) => {
        if (done) return;
        end();
        reject(e);
      },
    );
  });
}
