/**
 * cluster/transfer in one process: manifests (chunks, segments, signatures), the resumable cache
 * and its verified ByteSource, the fetcher against corrupt and failing peers, the rate limiter.
 */
import { create } from "@bufbuild/protobuf";
import { FetchChunksResponseSchema } from "../../../proto/mod.ts";
import type { ChunkPeer } from "../../../cluster/transfer/mod.ts";
import {
  chunkCount,
  computeManifest,
  corruptionHook,
  FetchError,
  fetchSegments,
  HEADER_SEGMENT,
  ModelCache,
  openManifest,
  RateLimiter,
  segmentsFor,
  sha256,
  signedManifest,
  tcpChunkClient,
} from "../../../cluster/transfer/mod.ts";
import { createCa, issueCertificate } from "../../../cluster/tls/mod.ts";
import { openGGUF, readGGUF } from "../../../model/gguf/mod.ts";
import { editedGGUF } from "../../support/gguf_edit.ts";
import { modelFingerprint } from "../../../cluster/model_id.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../../support/assert.ts";
import { STORIES, storiesFixture } from "./stories_fixture.ts";

const CHUNK = 64 * 1024;

Deno.test("the manifest describes the header and every tensor, chunk by chunk", async () => {
  const { manifest } = await computeManifest(STORIES, { nodeId: "a", chunkSize: CHUNK });
  const file = await openGGUF(STORIES);
  const bytes = await Deno.readFile(STORIES);
  try {
    assertEquals(
      manifest.modelId,
      `stories260K.gguf@${file.fileSize}#${await modelFingerprint(file)}`,
    );
    assertEquals(
      manifest.sha256,
      Array.from(sha256(bytes), (b) => b.toString(16).padStart(2, "0")).join(""),
    );
    assertEquals(manifest.segments.length, file.tensors.length + 1);
    assertEquals(manifest.segments[0].name, HEADER_SEGMENT);
    assertEquals(Number(manifest.segments[0].length), file.dataOffset);
    for (const s of manifest.segments) {
      const off = Number(s.offset);
      const len = Number(s.length);
      assertEquals(s.chunkSha256.length, chunkCount(len, CHUNK));
      assertEquals(s.sha256, sha256(bytes.subarray(off, off + len)));
      assertEquals(s.chunkSha256[0], sha256(bytes.subarray(off, off + Math.min(CHUNK, len))));
    }
    // A middle stage reads the header and its layers only.
    const segs = segmentsFor(manifest, file, { from: 1, to: 3 });
    assertEquals(segs[0], 0);
    assert(segs.slice(1).every((i) => /^blk\.[12]\./.test(manifest.segments[i].name)));
    assertEquals(segs.length, 1 + 2 * 9);
  } finally {
    file.close();
  }
});

Deno.test("every stage fetches the model's RoPE frequency factors (rope_freqs, LongRoPE's)", async () => {
  const factors = new Uint8Array(new Float32Array([1, 2, 4, 8]).buffer);
  const names = ["rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"];
  const path = await editedGGUF(STORIES, {
    tensors: (t) => [...t, ...names.map((name) => ({ name, dims: [4], type: 0, data: factors }))],
  });
  const file = await openGGUF(path);
  try {
    const { manifest } = await computeManifest(path, { nodeId: "a", chunkSize: CHUNK });
    for (const name of names) {
      const at = manifest.segments.findIndex((s) => s.name === name);
      assert(at > 0, name);
      // Before, only layers, the embeddings and the output were wanted: a stage loaded from the
      // cache found no factors (a stage load failed, or a whole-model agent ran without them).
      for (const range of [{ from: 0, to: 1 }, { from: 1, to: 3 }, { from: 3, to: 5 }]) {
        assert(segmentsFor(manifest, file, range).includes(at), `${name} ${JSON.stringify(range)}`);
      }
    }
  } finally {
    file.close();
    await Deno.remove(path);
  }
});

Deno.test("manifests are signed with the node's TLS key and checked against the CA", async () => {
  const { bytes } = await computeManifest(STORIES, { nodeId: "a", chunkSize: CHUNK });
  const ca = createCa();
  const node = issueCertificate(ca, { commonName: "a", kind: "node" });
  const signed = signedManifest(bytes, node, []);
  assert(signed.signatureScheme.startsWith("sha256-with-"));
  assert(openManifest(signed, ca.cert).signature.startsWith("verified"));
  // Tampered bytes, a foreign CA, or an unsigned manifest under TLS are refused.
  const tampered = { ...signed, manifest: bytes.slice() };
  tampered.manifest[10] ^= 1;
  assertThrows(() => openManifest(tampered, ca.cert), Error, "does not verify");
  assertThrows(() => openManifest(signed, createCa().cert), Error, "did not issue");
  const unsigned = signedManifest(bytes, undefined, []);
  assertThrows(() => openManifest(unsigned, ca.cert), Error, "unsigned");
  assertEquals(openManifest(unsigned, undefined).signature, "unsigned (TLS is off)");
});

/** A peer serving `bytes` from memory; `corrupt` flips a byte of the chunks it names. */
function memoryPeer(
  id: string,
  bytes: Uint8Array,
  manifest: Awaited<ReturnType<typeof computeManifest>>["manifest"],
  opts: {
    corrupt?: (seg: number, chunk: number) => boolean;
    failAfter?: number;
    /** Called before each chunk is sent (a slow peer awaits here). */
    before?: (seg: number, chunk: number) => Promise<void>;
    /** Break every stream after its last chunk (as node:http2 sometimes reports). */
    breakAtEnd?: boolean;
  } = {},
): ChunkPeer & { served: number } {
  const peer = {
    id,
    segments: "all" as const,
    served: 0,
    client: {
      async *fetchChunks(req: { chunks: { segment: number; chunk: number }[] }) {
        for (const { segment, chunk } of req.chunks) {
          if (opts.failAfter !== undefined && peer.served >= opts.failAfter) {
            throw new Error(`${id} went away`);
          }
          await opts.before?.(segment, chunk);
          const s = manifest.segments[segment];
          const off = Number(s.offset) + chunk * manifest.chunkSize;
          const end = Math.min(off + manifest.chunkSize, Number(s.offset) + Number(s.length));
          const data = bytes.slice(off, end);
          if (opts.corrupt?.(segment, chunk)) data[0] ^= 0xff;
          peer.served++;
          yield create(FetchChunksResponseSchema, { segment, chunk, data });
        }
        if (opts.breakAtEnd) throw new Error("Premature close");
      },
    },
  };
  return peer as unknown as ChunkPeer & { served: number };
}

Deno.test("peers that keep failing slower than their cooldown end the fetch after the stall bound", async () => {
  const { manifest, raw, bytes, dir } = await storiesFixture(CHUNK);
  try {
    const cache = await ModelCache.open(dir, manifest, raw);
    const stats = { bytesReceived: 0, bytesRefetched: 0, corruptChunks: 0 };
    // Every stream fails after 600 ms, past the 500 ms cooldown, and two peers take turns:
    // one is always "able", so only a bound on the failure path ends this.
    const dying = (id: string) =>
      memoryPeer(id, bytes, manifest, {
        before: async () => {
          await new Promise((r) => setTimeout(r, 600));
          throw new Error(`${id} went away`);
        },
      });
    const peers = [dying("dying-1"), dying("dying-2")];
    const t0 = Date.now();
    const e = await assertRejects(
      () =>
        fetchSegments({
          cache,
          segments: [0, 1],
          peers: () => Promise.resolve(peers),
          stats,
          stallMs: 1000,
          concurrency: 1,
        }),
      FetchError,
    );
    assert(/dying-\d went away/.test(e.message), e.message);
    assert(Date.now() - t0 < 5000, `gave up after ${Date.now() - t0} ms`);
    cache.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the fetcher re-fetches corrupt chunks elsewhere and resumes after a failure", async () => {
  const { manifest, raw, bytes, dir } = await storiesFixture(CHUNK);
  try {
    const cache = await ModelCache.open(dir, manifest, raw);
    const all = manifest.segments.map((_, i) => i);
    const stats = { bytesReceived: 0, bytesRefetched: 0, corruptChunks: 0 };
    // "bad" corrupts everything; "flaky" dies after 5 chunks; "good" is fine.
    const bad = memoryPeer("bad", bytes, manifest, { corrupt: corruptionHook("1") });
    const flaky = memoryPeer("flaky", bytes, manifest, { failAfter: 5 });
    const good = memoryPeer("good", bytes, manifest);
    await fetchSegments({
      cache,
      segments: all.slice(0, 12),
      peers: () => Promise.resolve([bad, flaky, good]),
      stats,
      stallMs: 5000,
    });
    assert(stats.corruptChunks > 0, "corruption detected");
    // How many chunks the flaky peer is asked for depends on how the 8 streams interleave (a
    // loaded machine ran the fetch to its end before flaky got 5): at most 5, and some.
    const counts = JSON.stringify({ bad: bad.served, flaky: flaky.served, good: good.served });
    assert(bad.served > 0 && flaky.served > 0 && flaky.served <= 5 && good.served > 0, counts);
    for (const i of all.slice(0, 12)) assert(cache.segmentDone(i));
    cache.close();

    // Reopen: the progress log says what is verified; only the rest is fetched.
    const again = await ModelCache.open(dir, manifest);
    assertEquals(again.doneSegments(), all.slice(0, 12));
    const before = good.served;
    await fetchSegments({
      cache: again,
      segments: all,
      peers: () => Promise.resolve([good]),
      stats,
    });
    const rest = all.slice(12).reduce(
      (n, i) => n + chunkCount(Number(manifest.segments[i].length), CHUNK),
      0,
    );
    assertEquals(good.served - before, rest, "only the missing chunks were fetched");

    // The cache is a ByteSource the GGUF reader and the stage loader read unchanged.
    const src = await again.source();
    const file = await readGGUF(src);
    src.parsing = false;
    const orig = await openGGUF(STORIES);
    for (const t of orig.tensors) {
      assertEquals(await file.readTensor(t.name), await orig.readTensor(t));
    }
    orig.close();
    // Bytes changed on disk after verification are refused, never loaded.
    const seg = all.find((i) => manifest.segments[i].name === "blk.0.attn_q.weight")!;
    const path = `${again.dir}/seg-${seg}.bin`;
    const onDisk = await Deno.readFile(path);
    onDisk[3] ^= 1;
    await Deno.writeFile(path, onDisk);
    await assertRejects(() => file.readTensor("blk.0.attn_q.weight"), Error, "not (or no longer)");
    // ... and fetched again by the next fetch (before, the segment stayed "done" and every load
    // of it failed until the cache was purged by hand), here after a restart.
    assert(!again.segmentDone(seg), "the changed segment is no longer done");
    again.close();
    const third = await ModelCache.open(dir, manifest);
    assert(!third.segmentDone(seg), "the log says so after a restart");
    const served = good.served;
    await fetchSegments({
      cache: third,
      segments: all,
      peers: () => Promise.resolve([good]),
      stats,
    });
    assertEquals(good.served - served, 1, "the one changed chunk is fetched again");
    assert(third.segmentDone(seg));
    const src3 = await third.source();
    const file3 = await readGGUF(src3);
    src3.parsing = false;
    assertEquals(
      await file3.readTensor("blk.0.attn_q.weight"),
      bytes.slice(
        Number(manifest.segments[seg].offset),
        Number(manifest.segments[seg].offset) + Number(manifest.segments[seg].length),
      ),
    );
    third.close();
    assert((await ModelCache.purge(dir, manifest.sha256)) > 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a cache without a tensor refuses to read it", async () => {
  const { manifest } = await computeManifest(STORIES, { nodeId: "a", chunkSize: CHUNK });
  const bytes = await Deno.readFile(STORIES);
  const dir = await Deno.makeTempDir();
  try {
    const cache = await ModelCache.open(dir, manifest);
    await fetchSegments({
      cache,
      segments: [0],
      peers: () => Promise.resolve([memoryPeer("p", bytes, manifest)]),
      stats: { bytesReceived: 0, bytesRefetched: 0, corruptChunks: 0 },
    });
    const src = await cache.source();
    const file = await readGGUF(src);
    src.parsing = false;
    await assertRejects(() => file.readTensor("output.weight"), Error, "not (or no longer)");
    cache.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the rate limiter paces bytes; the corruption hook parses its two forms", async () => {
  const limit = new RateLimiter(1_000_000, 0);
  const t0 = performance.now();
  for (let i = 0; i < 4; i++) await limit.take(50_000);
  const ms = performance.now() - t0;
  // The pacing is the lower bound; the upper one only catches a limiter that sleeps far too long
  // (timers on a loaded machine fire late, so it is not a speed bound).
  assert(ms >= 180 && ms < 5000, `200 kB at 1 MB/s took ${ms} ms`);
  const list = corruptionHook("1:0, 3:*");
  assert(list(1, 0) && !list(1, 1) && list(3, 7) && !list(2, 0));
  assert(
    corruptionHook("1")(5, 5) && !corruptionHook("0")(5, 5) && !corruptionHook(undefined)(0, 0),
  );
});

Deno.test("a stage's tensors read from the cache while their chunks are still arriving", async () => {
  const { manifest, raw, bytes, dir } = await storiesFixture(CHUNK);
  const orig = await openGGUF(STORIES);
  try {
    const cache = await ModelCache.open(dir, manifest, raw);
    const stats = { bytesReceived: 0, bytesRefetched: 0, corruptChunks: 0 };
    await fetchSegments({
      cache,
      segments: [0],
      peers: () => Promise.resolve([memoryPeer("p", bytes, manifest)]),
      stats,
    });
    const src = await cache.source();
    const file = await readGGUF(src);
    src.parsing = false;
    // The rest arrives one chunk per millisecond, in file order across 3 streams.
    const order: number[] = [];
    const slow = memoryPeer("slow", bytes, manifest, {
      before: async (seg) => {
        order.push(seg);
        await new Promise((r) => setTimeout(r, 1));
      },
    });
    const rest = manifest.segments.map((_, i) => i).slice(1);
    const fetching = fetchSegments({
      cache,
      segments: rest,
      peers: () => Promise.resolve([slow]),
      stats,
      concurrency: 3,
      batch: 2,
    });
    let fetched = false;
    fetching.then(() => (fetched = true), () => {});
    let readEarly = 0;
    for (const t of orig.tensors) {
      assertEquals(await file.readTensor(t.name), await orig.readTensor(t), t.name);
      if (!fetched) readEarly++;
    }
    assert(readEarly > 0, "tensors were read while the fetch ran");
    await fetching;
    // Several streams, yet segments were started in file order.
    const started = order.filter((seg, i) => order.indexOf(seg) === i);
    assertEquals(started, [...started].sort((a, b) => a - b));
    for (const i of rest) assert(cache.segmentDone(i));

    // A read of chunks no fetch will bring fails at once, naming why the last fetch failed.
    const again = await ModelCache.open(await Deno.makeTempDir({ dir }), manifest, raw);
    const seg = rest[0];
    await assertRejects(
      () => again.readVerifiedInto(seg, 0, new Uint8Array(16)),
      Error,
      "not (or no longer) verified",
    );
    again.fetchStarted();
    const waiting = again.readVerifiedInto(seg, 0, new Uint8Array(16));
    again.fetchEnded(new Error("the source went away"));
    await assertRejects(() => waiting, Error, "the fetch failed: the source went away");
    again.close();
    cache.close();
  } finally {
    orig.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a stream that breaks after its last chunk is no failure", async () => {
  const { manifest, raw, bytes, dir } = await storiesFixture(CHUNK);
  try {
    const cache = await ModelCache.open(dir, manifest, raw);
    const stats = { bytesReceived: 0, bytesRefetched: 0, corruptChunks: 0 };
    const peer = memoryPeer("p", bytes, manifest, { breakAtEnd: true });
    const logged: string[] = [];
    const all = manifest.segments.map((_, i) => i);
    await fetchSegments({
      cache,
      segments: all,
      peers: () => Promise.resolve([peer]),
      stats,
      log: (m) => logged.push(m),
    });
    for (const i of all) assert(cache.segmentDone(i));
    assertEquals(logged, [], "nothing was retried");
    assertEquals(stats.bytesRefetched, 0);
    cache.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a peer that goes silent mid-stream is left after the idle bound; a sole corrupt peer ends the fetch", async () => {
  const { manifest, raw, bytes, dir } = await storiesFixture(CHUNK);
  // A host lost without a FIN: its data plane accepts the stream and then says nothing.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of silent) held.push(c);
  })();
  try {
    const cache = await ModelCache.open(dir, manifest, raw);
    const stats = { bytesReceived: 0, bytesRefetched: 0, corruptChunks: 0 };
    const quiet: ChunkPeer = {
      id: "quiet",
      client: tcpChunkClient(
        `127.0.0.1:${(silent.addr as Deno.NetAddr).port}`,
      ) as unknown as ChunkPeer["client"],
      segments: "all",
    };
    const good = memoryPeer("good", bytes, manifest);
    const t0 = Date.now();
    await fetchSegments({
      cache,
      segments: [0, 1, 2],
      peers: () => Promise.resolve([quiet, good]),
      stats,
      idleMs: 300,
      concurrency: 2,
    });
    for (const i of [0, 1, 2]) assert(cache.segmentDone(i));
    assert(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
    assert(good.served > 0);

    // The only peer serves bytes that never verify (its file changed under the same path):
    // streams that bring nothing new count against the stall bound instead of looping.
    const bad = memoryPeer("bad", bytes, manifest, { corrupt: corruptionHook("1") });
    const e = await assertRejects(
      () =>
        fetchSegments({
          cache,
          segments: manifest.segments.map((_, i) => i),
          peers: () => Promise.resolve([bad]),
          stats,
          stallMs: 1000,
          concurrency: 1,
        }),
      FetchError,
    );
    assert(e.message.includes("bad: its chunks failed verification"), e.message);
    cache.close();
  } finally {
    silent.close();
    for (const c of held) c.close();
    await accepting.catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a cache that cannot be written fails the fetch at once, naming the cache", async () => {
  const { manifest, raw, bytes, dir } = await storiesFixture(CHUNK);
  try {
    const cache = await ModelCache.open(dir, manifest, raw);
    // The cache's directory vanishes (an unmounted disk; chmod would not stop root).
    await Deno.remove(`${dir}/${manifest.sha256}`, { recursive: true });
    const stats = { bytesReceived: 0, bytesRefetched: 0, corruptChunks: 0 };
    const t0 = Date.now();
    const e = await assertRejects(
      () =>
        fetchSegments({
          cache,
          segments: [1],
          peers: () => Promise.resolve([memoryPeer("good", bytes, manifest)]),
          stats,
          stallMs: 60_000,
        }),
      FetchError,
    );
    assert(e.message.includes("in the cache"), e.message);
    assert(Date.now() - t0 < 5000, `failed after ${Date.now() - t0} ms, not at once`);
    cache.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a segment file that cannot be opened for a passing reason is not marked lost", async () => {
  const { manifest, raw, bytes, dir } = await storiesFixture(CHUNK);
  try {
    const cache = await ModelCache.open(dir, manifest, raw);
    const all = manifest.segments.map((_, i) => i);
    const stats = { bytesReceived: 0, bytesRefetched: 0, corruptChunks: 0 };
    const good = memoryPeer("good", bytes, manifest);
    await fetchSegments({ cache, segments: all, peers: () => Promise.resolve([good]), stats });
    const seg = all.find((i) => manifest.segments[i].name === "blk.0.attn_q.weight")!;
    const path = `${cache.dir}/seg-${seg}.bin`;
    const kept = `${path}.kept`;
    await Deno.rename(path, kept);
    // Not "not found" (a symbolic link to itself: ELOOP, as EMFILE or EACCES would be): the
    // open fails, the read throws, and the segment stays done. Before, any failure to open
    // recorded the segment lost ("x" in the log) and its intact bytes were fetched again.
    await Deno.symlink(path, path);
    const into = new Uint8Array(cache.chunkLength(seg, 0));
    await assertRejects(() => cache.readChunk(seg, 0, into), Error);
    await assertRejects(() => cache.readVerifiedSegment(seg), Error);
    assert(cache.segmentDone(seg), "a passing failure is no loss");
    await Deno.remove(path);
    await Deno.rename(kept, path);
    assert(await cache.readChunk(seg, 0, into), "it reads once the file is back");
    // A file really gone is a loss: fetched again by the next fetch.
    await Deno.remove(path);
    assertEquals(await cache.readChunk(seg, 0, into), false);
    assert(!cache.segmentDone(seg));
    cache.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
