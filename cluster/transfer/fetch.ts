/**
 * The fetcher: pull the missing chunks of some segments from the peers that have them, verify
 * each chunk's sha256 before it touches the cache, and finish each segment with its own sha256.
 *
 * - `concurrency` streams fetch batches of chunks in file order (several share a big segment),
 *   spread round-robin over the peers that hold them, so several sources serve in parallel.
 * - Each chunk is verified and written to the cache before the next is read from its stream:
 *   a fetcher holds at most one chunk per stream plus what HTTP/2 flow control lets arrive
 *   (peers.ts TRANSFER_WINDOW), never a batch or a tensor.
 * - A chunk that fails verification is counted, and fetched again from another peer when one
 *   has it (the peer that sent it is avoided for that chunk).
 * - A stream may bring each chunk it asked for once: a chunk that fails verification, one it did
 *   not ask for or one sent twice ends it, the peer cooled down like a broken stream. Only new
 *   verified chunks count as progress, so a peer sending junk cannot hold its claims for ever.
 * - A broken stream (a source killed) puts the peer on a short cooldown; the remaining chunks are
 *   fetched from whoever has them, or from the same peer once it is back. Verified chunks are
 *   never fetched again: the resume point is the cache's progress log.
 *
 * @module
 */
import type { Client } from "@connectrpc/connect";
import type { TransferService } from "../../proto/mod.ts";
import type { ModelCache } from "./cache.ts";
import { discardReceived } from "./memory.ts";
import { type RateLimiter, sleep } from "./rate.ts";

/** A peer that can serve chunks of the model. */
export interface ChunkPeer {
  /** Node id. */
  id: string;
  /** A TransferService client (its own transport: never the activation connection). */
  client: Client<typeof TransferService>;
  /** Segments it can serve (`"all"` for a node holding the file). */
  segments: Set<number> | "all";
}

/** Counters of one fetcher (cumulative). */
export interface FetchStats {
  /** Chunk bytes received from peers. */
  bytesReceived: number;
  /** Bytes received for chunks received before (retries after corruption or a broken stream). */
  bytesRefetched: number;
  /** Chunks whose sha256 did not match. */
  corruptChunks: number;
}

/** Options of {@linkcode fetchSegments}. */
export interface FetchOptions {
  /** Where verified chunks go. */
  cache: ModelCache;
  /** Segment indices wanted. */
  segments: number[];
  /** The peers to ask, re-read after every failure. */
  peers: () => Promise<ChunkPeer[]>;
  /** Counters to update. */
  stats: FetchStats;
  /** Parallel streams; default 4. */
  concurrency?: number;
  /** Chunks per FetchChunks call; default 8. */
  batch?: number;
  /** Paces received bytes (--transfer-rate-limit). */
  limiter?: RateLimiter;
  /** Called after each verified chunk. */
  onChunk?: () => void;
  /** Stops fetching. */
  signal?: AbortSignal;
  /** Give up after failing this long without any progress; default 120 s. */
  stallMs?: number;
  /**
   * End a stream that delivers nothing for this long and try another peer; default 30 s. A peer
   * lost without a FIN (power, partition, a frozen VM) leaves a connection that would wait on
   * TCP for hours.
   */
  idleMs?: number;
  /** Diagnostics. */
  log?: (msg: string, fields?: Record<string, unknown>) => void;
}

/** Chunks every peer failed to deliver for too long: the message says which and why. */
export class FetchError extends Error {
  /** @param message what failed and what to do */
  constructor(message: string) {
    super(message);
    this.name = "FetchError";
  }
}

/**
 * Fetch every missing chunk of `opts.segments` into the cache; resolves when all verified.
 *
 * Work goes out in file order, `batch` chunks at a time, and several streams share a segment: a
 * stage loading while its layers arrive (ModelCache.readVerifiedInto waits for chunks) gets its
 * tensors in about the order it reads them, and a big tensor never ends the fetch on one stream.
 */
export async function fetchSegments(opts: FetchOptions): Promise<void> {
  const { cache, stats } = opts;
  const seen = new Set<string>();
  const avoid = new Map<string, string>();
  const cooldown = new Map<string, number>();
  /** Segments not done yet, in file order; finished ones leave it in O(1). */
  const queue = new Set(opts.segments.filter((s) => !cache.segmentDone(s)));
  /**
   * Segments a stream ended on since finishReady last looked (at first all: a resumed cache may
   * hold every chunk of some). finishReady looked at every queued segment, with an indexOf
   * each, before every batch: O(N²) per batch froze the event loop on 50 000 segments.
   */
  const touched = new Set(queue);
  /** Chunks some stream is fetching now, per segment. */
  const claimed = new Map<number, Set<number>>();
  const claims = (seg: number) => {
    let c = claimed.get(seg);
    if (!c) claimed.set(seg, c = new Set());
    return c;
  };
  let lastProgress = Date.now();
  let lastError = "";
  let rr = 0;
  const stallMs = opts.stallMs ?? 120_000;
  const idleMs = opts.idleMs ?? 30_000;
  // The first failure ends every stream: the other workers went on fetching (and held their
  // peers' streams) for a fetch already reported failed.
  const halt = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, halt.signal]) : halt.signal;
  /** Past the stall bound: give up with what the peers did (else the caller retries). */
  const checkStall = (seg: number) => {
    if (Date.now() - lastProgress <= stallMs) return;
    throw new FetchError(
      `no chunk of ${cache.manifest.segments[seg].name} of ${cache.manifest.modelId} ` +
        `arrived for ${Math.round(stallMs / 1000)} s (last error: ${lastError}); check ` +
        `that peer or start another agent that holds the file`,
    );
  };

  const pick = (peers: ChunkPeer[], seg: number, chunk: number): ChunkPeer | undefined => {
    const now = Date.now();
    const able = peers.filter((p) =>
      (p.segments === "all" || p.segments.has(seg)) && (cooldown.get(p.id) ?? 0) <= now
    );
    const bad = avoid.get(`${seg}:${chunk}`);
    const good = able.filter((p) => p.id !== bad);
    const from = good.length ? good : able;
    return from.length ? from[rr++ % from.length] : undefined;
  };

  /** Claim the next unclaimed chunks in file order: [segment, chunks], or undefined if none. */
  const nextWork = (): [number, number[]] | undefined => {
    for (const seg of queue) {
      const taken = claims(seg);
      const free = cache.missingChunks(seg).filter((c) => !taken.has(c));
      if (!free.length) continue;
      // Claimed before anything is awaited, so no other stream takes the same chunks.
      const batch = free.slice(0, opts.batch ?? 8);
      for (const c of batch) taken.add(c);
      return [seg, batch];
    }
    return undefined;
  };

  /** Segments with every chunk stored: finish them (or queue their chunks again). */
  const finishReady = async () => {
    // Other workers add to and take from `touched` while this one awaits: a Set's iteration
    // sees what is added, and skips what is taken.
    for (const seg of touched) {
      touched.delete(seg);
      // Another stream finished it while this one waited on an earlier segment; or a stream
      // still fetches it, and touches it again when it ends.
      if (!queue.has(seg) || cache.missingChunks(seg).length || claims(seg).size) continue;
      queue.delete(seg);
      if (!await cache.finishSegment(seg)) {
        opts.log?.("segment hash mismatch; fetching it again", { segment: seg });
        queue.add(seg);
      }
    }
  };

  const worker = async () => {
    while (!signal.aborted) {
      await finishReady();
      const work = nextWork();
      if (!work) return;
      const [seg, batch] = work;
      const taken = claims(seg);
      const peers = await opts.peers().catch(() => [] as ChunkPeer[]);
      const peer = pick(peers, seg, batch[0]);
      if (!peer) {
        for (const c of batch) taken.delete(c);
        if (Date.now() - lastProgress > stallMs) {
          throw new FetchError(
            `no peer could serve ${cache.manifest.segments[seg].name} of ` +
              `${cache.manifest.modelId} for ${Math.round(stallMs / 1000)} s (last error: ` +
              `${lastError || "no peer holds it"}); start an agent that holds the file`,
          );
        }
        await sleep(250, signal);
        continue;
      }
      // Ends the stream when the peer goes quiet (reset at every message).
      const idle = new AbortController();
      let watchdog: ReturnType<typeof setTimeout> | undefined;
      const watch = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(
          () => idle.abort(new Error(`sent nothing for ${idleMs / 1000} s`)),
          idleMs,
        );
      };
      let verified = 0;
      /**
       * Chunks of this batch the stream has not brought yet. The watchdog is re-armed by every
       * message, so a peer sending junk, repeats or chunks never asked for (a bug, or a rogue)
       * kept its stream and its claims for ever: each message must take one chunk off this
       * set, which also ends a stream that sends more messages than it was asked for.
       */
      const pending = new Set(batch);
      /** End the stream for what the peer sent; its remaining chunks go to other peers. */
      const cutOff = (why: string): never => {
        for (const c of pending) avoid.set(`${seg}:${c}`, peer.id);
        // Handled below as a broken stream: the peer is cooled down.
        throw new Error(why);
      };
      try {
        watch();
        const stream = peer.client.fetchChunks(
          {
            sha256: cache.manifest.sha256,
            chunks: batch.map((chunk) => ({ segment: seg, chunk })),
          },
          { signal: AbortSignal.any([signal, idle.signal]) },
        );
        for await (const m of stream) {
          // Only the wait for the next message counts as the peer's silence: this side's rate
          // limit and cache writes do not.
          clearTimeout(watchdog);
          try {
            const key = `${m.segment}:${m.chunk}`;
            stats.bytesReceived += m.data.length;
            if (seen.has(key)) stats.bytesRefetched += m.data.length;
            seen.add(key);
            if (m.segment !== seg || !pending.delete(m.chunk)) {
              cutOff(
                `sent chunk ${m.chunk} of segment ${m.segment}, which it was not asked for ` +
                  `or sent before`,
              );
            }
            await opts.limiter?.take(m.data.length, signal);
            if (cache.has(m.segment, m.chunk)) {
              // Nothing new (claims are exclusive, so this is rare): not progress either.
              checkStall(seg);
              continue;
            }
            // The cache's own failure (disk full, a read-only directory) is no peer's fault:
            // retrying other peers for the stall bound would only hide it.
            const stored = await cache.writeChunk(m.segment, m.chunk, m.data).catch((err) => {
              throw new FetchError(
                `cannot store ${cache.manifest.segments[m.segment]?.name ?? "a chunk"} in the ` +
                  `cache: ${(err as Error).message}`,
              );
            });
            if (!stored) {
              stats.corruptChunks++;
              avoid.set(key, peer.id);
              opts.log?.("chunk failed verification; fetching it again", {
                peer: peer.id,
                segment: cache.manifest.segments[m.segment]?.name,
                chunk: m.chunk,
              });
              // The rest of its batch is likely no better (a changed file, a corrupting peer):
              // other peers get it now, instead of after the whole batch has been read.
              cutOff(
                `its chunks failed verification (chunk ${m.chunk} of ` +
                  `${cache.manifest.segments[m.segment]?.name})`,
              );
            }
            lastProgress = Date.now();
            verified++;
            opts.onChunk?.();
          } finally {
            // Written (or refused): its buffer is garbage now, freed at once.
            discardReceived(m.data);
            watch();
          }
        }
        // A stream that ended with nothing new (the peer sent none of the chunks asked for)
        // counts against the stall bound like a failed one.
        if (verified === 0 && !batch.every((c) => cache.has(seg, c))) {
          lastError ||= `${peer.id}: its stream ended without the chunks asked for`;
          checkStall(seg);
          cooldown.set(peer.id, Date.now() + 500);
        }
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof FetchError) throw e;
        // Under Deno's node:http2 a server stream sometimes ends with "Premature close" after its
        // last message arrived (seen with several streams finishing together): every chunk is
        // here, so this is no failure, and the peer is not put on a cooldown for it.
        if (batch.every((c) => cache.has(seg, c))) continue;
        const why = idle.signal.aborted
          ? (idle.signal.reason as Error).message
          : (e as Error).message;
        lastError = `${peer.id}: ${why}`;
        // Peers that keep failing (slower than their cooldown, so some peer is always "able")
        // must not retry forever: the same bound as when none is.
        checkStall(seg);
        cooldown.set(peer.id, Date.now() + 500);
        opts.log?.("chunk stream failed; retrying", { peer: peer.id, error: lastError });
      } finally {
        clearTimeout(watchdog);
        // Whatever did not arrive is free for any stream again.
        for (const c of batch) taken.delete(c);
        touched.add(seg);
      }
    }
  };
  cache.fetchStarted();
  let failure: Error | undefined;
  try {
    const workers = Array.from({ length: opts.concurrency ?? 4 }, () =>
      worker().catch((e) => {
        halt.abort();
        throw e;
      }));
    // Settled, not raced: the fetch ends once no stream is open.
    const failed = (await Promise.allSettled(workers)).find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    await finishReady();
    if (opts.signal?.aborted) throw new FetchError("the transfer was cancelled");
  } catch (e) {
    failure = e as Error;
    throw e;
  } finally {
    cache.fetchEnded(failure);
  }
}
