/**
 * Bounded buffering on both ends of a transfer (issue 17: agents kept fetch-time memory): the
 * source holds two chunks per stream however slow its peer, the fetcher writes each chunk before
 * it takes the next from its stream, and freed buffers can be handed back to the OS.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { FetchChunksResponseSchema, TransferService } from "../../../proto/mod.ts";
import { createRpcTransport, startRpcServer } from "../../../cluster/rpc/mod.ts";
import {
  type ChunkPeer,
  collectGarbage,
  computeManifest,
  discardReceived,
  fetchSegments,
  ModelCache,
  readAhead,
  releaseFreedMemory,
  transferService,
} from "../../../cluster/transfer/mod.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";
import { STORIES, storiesFixture, transferManager } from "./stories_fixture.ts";

const CHUNK = 4096;
const tick = () => new Promise((r) => setTimeout(r, 1));

Deno.test("readAhead: in order, at most depth reads ahead of a slow consumer", async () => {
  for (const depth of [0, 1, 3]) {
    let started = 0;
    let consumed = 0;
    let most = 0;
    const read = async (x: number, i: number) => {
      started++;
      most = Math.max(most, started - consumed);
      assertEquals(i, x, "the index is the item's position");
      await tick();
      return x * 10;
    };
    const got: number[] = [];
    for await (const v of readAhead([0, 1, 2, 3, 4, 5, 6], read, depth)) {
      got.push(v);
      await tick();
      await tick(); // a slow consumer: every read ahead has finished by now
      consumed++;
    }
    assertEquals(got, [0, 10, 20, 30, 40, 50, 60]);
    assertEquals(most, depth + 1, `depth ${depth}: values alive at once`);
  }
});

Deno.test("readAhead: a failed read throws in its turn; an abandoned one is not unhandled", async () => {
  const read = async (x: number) => {
    await tick();
    if (x === 2) throw new Error(`read ${x} failed`);
    return x;
  };
  const got: number[] = [];
  await assertRejects(
    async () => {
      for await (const v of readAhead([0, 1, 2, 3], read, 2)) got.push(v);
    },
    Error,
    "read 2 failed",
  );
  assertEquals(got, [0, 1]);
  // Stopping after the first value leaves read 2 running and failing: nobody awaits it, and
  // the test's sanitizers would report an unhandled rejection.
  for await (const _ of readAhead([0, 1, 2, 3], read, 2)) break;
  await tick();
  await tick();
});

/** A TransferManager that serves files by path, with nothing else of an agent. */
const sourceManager = (cacheDir: string) => transferManager("src", cacheDir, CHUNK);

Deno.test("a source streams chunks through two buffers per stream, never one per chunk", async () => {
  const dir = await Deno.makeTempDir();
  const m = sourceManager(dir);
  try {
    const answer = await m.getManifest({ path: STORIES, model: "" });
    const { manifest } = await computeManifest(STORIES, { nodeId: "x", chunkSize: CHUNK });
    const bytes = await Deno.readFile(STORIES);
    const seg = manifest.segments.findIndex((s) => s.name === "token_embd.weight");
    const n = manifest.segments[seg].chunkSha256.length;
    assert(n >= 6, `token_embd has ${n} chunks`);
    assertEquals(answer.availableSegments.length, manifest.segments.length);
    const chunks = Array.from({ length: n }, (_, chunk) => ({ segment: seg, chunk }));
    const held = new Set<ArrayBufferLike>();
    let i = 0;
    for await (
      const c of m.fetchChunks({ sha256: manifest.sha256, chunks }, new AbortController().signal)
    ) {
      const at = Number(manifest.segments[seg].offset) + c.chunk * CHUNK;
      assertEquals(c.chunk, i++);
      assertEquals(c.data, bytes.subarray(at, at + c.data.length), `chunk ${c.chunk}`);
      held.add(c.data.buffer);
      await tick(); // a slow peer
    }
    assertEquals(i, n);
    assertEquals(held.size, 2, "the chunks of one stream live in two buffers");
  } finally {
    m.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FetchChunks over plain gRPC sends each chunk from its buffer; every protocol gets the same bytes", async () => {
  const dir = await Deno.makeTempDir();
  const m = sourceManager(dir);
  // Count the chunks of segment `counted` sent as envelopes built in place (the lean path).
  let framed = 0;
  let counted = -1;
  const fetchChunks = m.fetchChunks.bind(m);
  m.fetchChunks = async function* (req, signal) {
    for await (const c of fetchChunks(req, signal)) {
      yield { ...c, envelope: () => (c.segment === counted && framed++, c.envelope()) };
    }
  };
  const server = await startRpcServer({
    port: 0,
    routes: (r) => r.service(TransferService, transferService(m)),
  });
  try {
    await m.getManifest({ path: STORIES, model: "" });
    const { manifest } = await computeManifest(STORIES, { nodeId: "x", chunkSize: CHUNK });
    const bytes = await Deno.readFile(STORIES);
    const seg = manifest.segments.findIndex((s) => s.name === "token_embd.weight");
    const n = manifest.segments[seg].chunkSha256.length;
    const chunks = Array.from({ length: n }, (_, chunk) => ({ segment: seg, chunk }));
    counted = seg;
    // Agents fetch over plain gRPC without gzip (the lean path); a gzip client goes through Connect.
    const cases = [
      { protocol: "grpc", gzip: false, lean: true },
      { protocol: "grpc", gzip: true, lean: false },
      { protocol: "connect", gzip: false, lean: false },
      { protocol: "grpc-web", gzip: false, lean: false },
    ] as const;
    for (const { protocol, gzip, lean } of cases) {
      const t = await createRpcTransport(`127.0.0.1:${server.port}`, { protocol, gzip });
      try {
        const client = createClient(TransferService, t);
        framed = 0;
        let i = 0;
        for await (const c of client.fetchChunks({ sha256: manifest.sha256, chunks })) {
          const at = Number(manifest.segments[seg].offset) + c.chunk * CHUNK;
          assertEquals([c.segment, c.chunk], [seg, i++], protocol);
          // (connect-node's gRPC client hands out Buffers: compared as plain bytes)
          const got = new Uint8Array(c.data.buffer, c.data.byteOffset, c.data.length);
          assertEquals(got, bytes.subarray(at, at + got.length), `${protocol} chunk ${c.chunk}`);
        }
        assertEquals(i, n, protocol);
        assertEquals(framed, lean ? n : 0, `${protocol} gzip ${gzip}: chunks framed in place`);
        // Errors keep their code on every path.
        const err = await assertRejects(async () => {
          for await (const _ of client.fetchChunks({ sha256: "00", chunks })) { /* none */ }
        }, ConnectError);
        assertEquals((err as ConnectError).code, Code.NotFound, protocol);
        // A client that stops early leaves the server serving the next call (another segment,
        // so what the server reads after the cancel is not counted in the next case).
        const other = chunks.map(() => ({ segment: 0, chunk: 0 })); // the header's first chunk
        for await (const _ of client.fetchChunks({ sha256: manifest.sha256, chunks: other })) break;
      } finally {
        t.close();
      }
    }
  } finally {
    await server.close();
    m.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the fetcher writes each chunk before taking the next from its stream", async () => {
  const { manifest, raw, bytes, dir } = await storiesFixture(CHUNK);
  try {
    const cache = await ModelCache.open(dir, manifest, raw);
    let sent = 0;
    let written = 0;
    let most = 0;
    const write = cache.writeChunk.bind(cache);
    cache.writeChunk = async (seg, chunk, data) => {
      await tick(); // a slow disk: received chunks would pile up if the fetcher read ahead
      const ok = await write(seg, chunk, data);
      written++;
      return ok;
    };
    const peer = {
      id: "p",
      segments: "all" as const,
      client: {
        async *fetchChunks(req: { chunks: { segment: number; chunk: number }[] }) {
          for (const { segment, chunk } of req.chunks) {
            const s = manifest.segments[segment];
            const off = Number(s.offset) + chunk * CHUNK;
            const end = Math.min(off + CHUNK, Number(s.offset) + Number(s.length));
            sent++;
            most = Math.max(most, sent - written);
            yield create(FetchChunksResponseSchema, {
              segment,
              chunk,
              data: bytes.slice(off, end),
            });
          }
        },
      },
    } as unknown as ChunkPeer;
    const all = manifest.segments.map((_, i) => i);
    const concurrency = 3;
    await fetchSegments({
      cache,
      segments: all,
      peers: () => Promise.resolve([peer]),
      stats: { bytesReceived: 0, bytesRefetched: 0, corruptChunks: 0 },
      concurrency,
      batch: 8,
    });
    assert(all.every((s) => cache.segmentDone(s)));
    assert(sent > 20, `${sent} chunks`);
    // Each stream's consumer holds one chunk at most: received, verified, being written.
    assert(most <= concurrency, `${most} chunks received and not yet written`);
    cache.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a chunk fetched over gRPC frees its buffer once written; views into shared bytes are left alone", async () => {
  const srcDir = await Deno.makeTempDir();
  const m = sourceManager(srcDir);
  const server = await startRpcServer({
    port: 0,
    routes: (r) => r.service(TransferService, transferService(m)),
  });
  const { manifest, raw, bytes, dir } = await storiesFixture(CHUNK);
  const t = await createRpcTransport(`127.0.0.1:${server.port}`, { gzip: false });
  try {
    await m.getManifest({ path: STORIES, model: "" });
    const cache = await ModelCache.open(dir, manifest, raw);
    const received: Uint8Array[] = [];
    const write = cache.writeChunk.bind(cache);
    cache.writeChunk = (seg, chunk, data) => {
      received.push(data);
      return write(seg, chunk, data);
    };
    const peer = { id: "src", segments: "all", client: createClient(TransferService, t) } as const;
    const all = manifest.segments.map((_, i) => i);
    await fetchSegments({
      cache,
      segments: all,
      peers: () => Promise.resolve([peer as unknown as ChunkPeer]),
      stats: { bytesReceived: 0, bytesRefetched: 0, corruptChunks: 0 },
    });
    assert(all.every((s) => cache.segmentDone(s)), "every segment verified");
    assert(received.length > 20, `${received.length} chunks`);
    assertEquals(received.filter((d) => !(d.buffer as ArrayBuffer).detached).length, 0);
    // The cache holds the file's bytes: each chunk was written before its buffer was freed.
    for (const [i, seg] of manifest.segments.entries()) {
      const at = Number(seg.offset);
      assertEquals(
        await cache.readVerifiedSegment(i),
        bytes.subarray(at, at + Number(seg.length)),
        seg.name,
      );
    }
    cache.close();

    // A message whose data is a view into bytes others use keeps them.
    const shared = new Uint8Array(3 * CHUNK).fill(7);
    discardReceived(shared.subarray(CHUNK, 2 * CHUNK));
    assert(!(shared.buffer as ArrayBuffer).detached);
    assertEquals(shared[0], 7);
  } finally {
    t.close();
    await server.close();
    m.close();
    await Deno.remove(srcDir, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dropped buffers are collected, and freed memory goes back to the OS where glibc allows", () => {
  const glibc = Deno.build.os === "linux" &&
    Deno.permissions.querySync({ name: "ffi" }).state === "granted" &&
    (() => {
      try {
        Deno.statSync("/lib/x86_64-linux-gnu/libc.so.6");
        return true;
      } catch {
        return false;
      }
    })();
  assertEquals(releaseFreedMemory(), glibc);
  // The collection before it frees dropped buffers: V8 exposes gc when asked at run time.
  // Allocated in a frame that is gone by the collection, so no stack slot keeps it alive.
  const box: { bytes?: Uint8Array } = {};
  (() => box.bytes = new Uint8Array(64 << 20).fill(1))();
  const before = Deno.memoryUsage().external;
  box.bytes = undefined;
  assert(collectGarbage(), "gc is exposed");
  const after = Deno.memoryUsage().external;
  assert(before - after >= 60 << 20, `external ${before >> 20} -> ${after >> 20} MiB`);
});
