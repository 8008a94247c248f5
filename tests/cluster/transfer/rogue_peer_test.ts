/**
 * A peer that never ends its chunk stream (junk that never verifies, chunks it was not asked
 * for, the same chunk again and again) used to hold the fetch for ever: each message re-armed
 * the idle watchdog and the stall bound was checked only when a stream ended.
 */
import { create } from "@bufbuild/protobuf";
import { FetchChunksResponseSchema } from "../../../proto/mod.ts";
import {
  type ChunkPeer,
  FetchError,
  fetchSegments,
  ModelCache,
} from "../../../cluster/transfer/mod.ts";
import { assert } from "../../support/assert.ts";
import { storiesFixture } from "./stories_fixture.ts";

const CHUNK = 64 * 1024;

type Fixture = Awaited<ReturnType<typeof storiesFixture>>;
type Asked = { segment: number; chunk: number }[];

/** Chunk `chunk` of segment `segment` as the file holds it. */
function chunkOf(f: Fixture, segment: number, chunk: number): Uint8Array {
  const s = f.manifest.segments[segment];
  const off = Number(s.offset) + chunk * CHUNK;
  return f.bytes.slice(off, Math.min(off + CHUNK, Number(s.offset) + Number(s.length)));
}

/** What a rogue sends every 20 ms, without end, for a request. */
const modes: Record<
  string,
  (f: Fixture, asked: Asked) => { segment: number; chunk: number; data: Uint8Array }
> = {
  // Bytes that never verify, for the first chunk asked for.
  junk: (_f, [a]) => ({ ...a, data: new Uint8Array(3) }),
  // The first chunk asked for, genuine, over and over.
  repeats: (f, [a]) => ({ ...a, data: chunkOf(f, a.segment, a.chunk) }),
  // A genuine chunk of another segment than the one asked for.
  unasked: (f, [a]) => {
    const segment = a.segment === 1 ? 2 : 1;
    return { segment, chunk: 0, data: chunkOf(f, segment, 0) };
  },
};

/** A peer that answers every request with `mode`'s message until its stream is dropped. */
function roguePeer(f: Fixture, mode: keyof typeof modes) {
  const counts = { streams: 0, messages: 0, open: 0 };
  const peer = {
    id: `rogue-${mode}`,
    segments: "all",
    client: {
      async *fetchChunks(req: { chunks: Asked }, opts: { signal?: AbortSignal }) {
        counts.streams++;
        counts.open++;
        try {
          for (;;) {
            await new Promise((r) => setTimeout(r, 20));
            if (opts.signal?.aborted) throw new Error("aborted");
            counts.messages++;
            yield create(FetchChunksResponseSchema, modes[mode](f, req.chunks));
          }
        } finally {
          counts.open--;
        }
      },
    },
  } as unknown as ChunkPeer;
  return { peer, counts };
}

/** A peer that serves exactly what it is asked for. */
function goodPeer(f: Fixture): ChunkPeer {
  return {
    id: "good",
    segments: "all",
    client: {
      async *fetchChunks(req: { chunks: Asked }) {
        for (const { segment, chunk } of req.chunks) {
          yield create(FetchChunksResponseSchema, {
            segment,
            chunk,
            data: chunkOf(f, segment, chunk),
          });
        }
      },
    },
  } as unknown as ChunkPeer;
}

/** Run a fetch for at most `ms`: what it came to, or "still running" (then stopped). */
async function fetchFor(
  ms: number,
  opts: Omit<Parameters<typeof fetchSegments>[0], "signal" | "stats">,
): Promise<{ outcome: "resolved" | "still running" | Error; ms: number }> {
  const stop = new AbortController();
  const t0 = Date.now();
  const run = fetchSegments({
    ...opts,
    stats: { bytesReceived: 0, bytesRefetched: 0, corruptChunks: 0 },
    signal: stop.signal,
  }).then(() => "resolved" as const, (e: Error) => e);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    run,
    new Promise<"still running">((r) => timer = setTimeout(() => r("still running"), ms)),
  ]);
  clearTimeout(timer);
  const took = Date.now() - t0;
  stop.abort();
  await run;
  return { outcome, ms: took };
}

for (const mode of Object.keys(modes) as (keyof typeof modes)[]) {
  Deno.test(`a peer sending ${mode} without end is cut off; a good peer serves the rest`, async () => {
    const f = await storiesFixture(CHUNK);
    try {
      const cache = await ModelCache.open(f.dir, f.manifest, f.raw);
      const all = f.manifest.segments.map((_, i) => i);
      const rogue = roguePeer(f, mode);
      // Bounds far above what the fetch needs: only cutting the rogue's streams off ends it.
      const { outcome, ms } = await fetchFor(8000, {
        cache,
        segments: all,
        peers: () => Promise.resolve([rogue.peer, goodPeer(f)]),
        idleMs: 10_000,
        stallMs: 10_000,
        concurrency: 4,
      });
      assert(outcome === "resolved", `${mode}: ${outcome} after ${ms} ms`);
      for (const i of all) assert(cache.segmentDone(i), `segment ${i}`);
      assert(rogue.counts.streams > 0, "the rogue was asked");
      // Its first message that brings nothing new ends its stream (a genuine repeat: its second).
      assert(
        rogue.counts.messages <= 2 * rogue.counts.streams,
        `${rogue.counts.messages} messages over ${rogue.counts.streams} streams`,
      );
      assert(rogue.counts.open === 0, `${rogue.counts.open} rogue streams still open`);
      cache.close();
    } finally {
      await Deno.remove(f.dir, { recursive: true });
    }
  });
}

Deno.test("a sole peer sending junk without end fails the fetch within the stall bound, naming it", async () => {
  const f = await storiesFixture(CHUNK);
  try {
    const cache = await ModelCache.open(f.dir, f.manifest, f.raw);
    const rogue = roguePeer(f, "junk");
    const { outcome, ms } = await fetchFor(8000, {
      cache,
      segments: [0, 1],
      peers: () => Promise.resolve([rogue.peer]),
      // The idle bound is never reached: the stall bound alone must end it.
      idleMs: 60_000,
      stallMs: 1000,
      concurrency: 2,
    });
    assert(outcome instanceof FetchError, `${outcome} after ${ms} ms`);
    assert(outcome.message.includes("rogue-junk: its chunks failed verification"), outcome.message);
    assert(ms < 3000, `failed after ${ms} ms (stall bound 1000 ms)`);
    assert(rogue.counts.open === 0, `${rogue.counts.open} rogue streams still open`);
    cache.close();
  } finally {
    await Deno.remove(f.dir, { recursive: true });
  }
});

Deno.test("a sole peer sending chunks it was not asked for fails the fetch, naming it", async () => {
  const f = await storiesFixture(CHUNK);
  try {
    const cache = await ModelCache.open(f.dir, f.manifest, f.raw);
    const rogue = roguePeer(f, "unasked");
    const { outcome, ms } = await fetchFor(8000, {
      cache,
      segments: [0, 3],
      peers: () => Promise.resolve([rogue.peer]),
      idleMs: 60_000,
      stallMs: 1000,
      concurrency: 2,
    });
    assert(outcome instanceof FetchError, `${outcome} after ${ms} ms`);
    assert(outcome.message.includes("which it was not asked for"), outcome.message);
    assert(ms < 3000, `failed after ${ms} ms (stall bound 1000 ms)`);
    cache.close();
  } finally {
    await Deno.remove(f.dir, { recursive: true });
  }
});
