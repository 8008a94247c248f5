/**
 * Manifests from peers: a malformed one is refused before anything loops or allocates on it,
 * real ones pass, and a fetch of many segments stays linear.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  FetchChunksResponseSchema,
  TransferManifestSchema,
  TransferSegmentSchema,
} from "../../../proto/mod.ts";
import {
  type ChunkPeer,
  computeManifest,
  fetchSegments,
  ManifestError,
  ModelCache,
  openManifest,
  sha256,
  signedManifest,
} from "../../../cluster/transfer/mod.ts";
import { MAX_MANIFEST_BYTES } from "../../../cluster/transfer/manifest.ts";
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";
import { editedGGUF } from "../../support/gguf_edit.ts";
import { FIXTURES } from "../../support/paths.ts";
import { STORIES } from "./stories_fixture.ts";

Deno.test("a malformed manifest is refused with what is wrong; a sound one opens", async () => {
  const { bytes } = await computeManifest(STORIES, { nodeId: "a", chunkSize: 4096 });
  assertEquals(
    openManifest(signedManifest(bytes, undefined, []), undefined).manifest.chunkSize,
    4096,
  );
  const cases: [string, (m: ReturnType<typeof decode>) => void][] = [
    // A chunk size of 1 over the file's length: millions of entries to track.
    ["chunk size 1 is outside", (m) => void (m.chunkSize = 1)],
    ["chunk size 0 is outside", (m) => void (m.chunkSize = 0)],
    ["ends past the file's", (m) => void (m.segments[1].length = 1n << 50n)],
    ["chunk hashes for", (m) => void m.segments[1].chunkSha256.pop()],
    ["has no segments", (m) => void (m.segments = [])],
    ["sha256 is not 64 hex digits", (m) => void (m.sha256 = "../../etc")],
    ["not 32 bytes", (m) => void (m.segments[0].sha256 = new Uint8Array(3))],
    ["segment 0 is not the header", (m) => void (m.segments[0].offset = 1n)],
    ["segment 0 is not the header", (m) => void m.segments.shift()],
    ["is not after the one before it", (m) => void (m.segments[2].offset = m.segments[1].offset)],
    ["is not after the one before it", (m) => void m.segments.reverse().unshift(m.segments.pop()!)],
    // Many empty segments at one offset, one hash each: any number of them passed.
    ["is not after the one before it", (m) => {
      const empty = { ...m.segments[1], length: 0n, chunkSha256: [m.segments[1].sha256] };
      m.segments.push(...Array.from({ length: 100 }, () => empty));
    }],
    ["65536 segments", (m) => {
      const empty = { ...m.segments[1], length: 0n, chunkSha256: [m.segments[1].sha256] };
      m.segments.push(...Array.from({ length: 1 << 16 }, () => empty));
    }],
  ];
  for (const [says, spoil] of cases) {
    const m = decode(bytes);
    spoil(m);
    const answer = signedManifest(toBinary(TransferManifestSchema, m), undefined, []);
    let err: unknown;
    try {
      openManifest(answer, undefined);
    } catch (e) {
      err = e;
    }
    assert(err instanceof ManifestError, `${says}: expected ManifestError, got ${err}`);
    assert(err.message.includes(says) && err.message.includes("malformed"), err.message);
  }
  // Too many bytes to be a manifest: refused before it is decoded.
  const huge = signedManifest(new Uint8Array(MAX_MANIFEST_BYTES + 1), undefined, []);
  assertThrows(() => openManifest(huge, undefined), ManifestError, "over the limit");
});

Deno.test("a manifest too big to decode is refused before decoding, in a few hundred ms", async () => {
  // 500 000 empty segments (40 MiB, under the byte limit): the count is read from tags alone.
  const { manifest } = await computeManifest(STORIES, { nodeId: "a", chunkSize: 4096 });
  const h = manifest.segments[1].sha256;
  const segment = create(TransferSegmentSchema, { name: "x", sha256: h, chunkSha256: [h] });
  const one = toBinary(TransferSegmentSchema, segment);
  const n = 500_000;
  const bytes = new Uint8Array(n * (one.length + 2));
  for (let i = 0; i < n; i++) bytes.set([0x32, one.length, ...one], i * (one.length + 2));
  const t0 = performance.now();
  assertThrows(
    () => openManifest(signedManifest(bytes, undefined, []), undefined),
    ManifestError,
    "65536 segments",
  );
  const ms = performance.now() - t0;
  assert(ms < 2000, `took ${ms.toFixed(0)} ms`);
});

Deno.test("real GGUF manifests pass: the fixtures, and a file of thousands of tensors", async () => {
  const paths = [STORIES];
  try {
    for await (const e of Deno.readDir(`${FIXTURES}/models`)) {
      if (e.name.endsWith(".gguf")) paths.push(`${FIXTURES}/models/${e.name}`);
    }
  } catch { /* no shared fixtures: stories260K alone */ }
  // stories260K with 3000 more small tensors of assorted sizes (padding between them).
  const many = await editedGGUF(STORIES, {
    tensors: (ts) => [
      ...ts,
      ...Array.from({ length: 3000 }, (_, i) => ({
        name: `extra.${i}.weight`,
        dims: [1 + (i % 37)],
        type: 0,
        data: new Uint8Array(4 * (1 + (i % 37))).fill(i & 0xff),
      })),
    ],
  });
  paths.push(many);
  try {
    for (const path of paths) {
      for (const chunkSize of [1024, 1 << 20]) {
        const { bytes, manifest } = await computeManifest(path, { nodeId: "a", chunkSize });
        const opened = openManifest(signedManifest(bytes, undefined, []), undefined).manifest;
        assertEquals(opened.segments.length, manifest.segments.length, path);
      }
    }
    assert(paths.length > 1);
  } finally {
    await Deno.remove(many);
  }
});

Deno.test("fetching 10 000 segments neither stalls the event loop nor takes quadratic time", async () => {
  // Empty segments, each one chunk: a batch per segment. finishReady looked at every queued
  // segment with an indexOf each before every batch (O(N²) per batch; 50 000 froze for seconds).
  const n = 10_000;
  const empty = sha256(new Uint8Array(0));
  const manifest = create(TransferManifestSchema, {
    modelId: "x.gguf@1#0",
    sha256: "b".repeat(64),
    fileSize: BigInt(n),
    chunkSize: 1 << 20,
    segments: Array.from({ length: n }, (_, i) =>
      create(TransferSegmentSchema, {
        name: `t${i}`,
        offset: BigInt(i),
        length: 0n,
        sha256: empty,
        chunkSha256: [empty],
      })),
  });
  const peer = {
    id: "p",
    segments: "all",
    client: {
      async *fetchChunks(req: { chunks: { segment: number; chunk: number }[] }) {
        for (const c of req.chunks) {
          yield create(FetchChunksResponseSchema, { ...c, data: new Uint8Array(0) });
        }
      },
    },
  } as unknown as ChunkPeer;
  const dir = await Deno.makeTempDir();
  const cache = await ModelCache.open(dir, manifest);
  let stall = 0;
  let last = performance.now();
  const tick = setInterval(() => {
    const now = performance.now();
    stall = Math.max(stall, now - last - 50);
    last = now;
  }, 50);
  const stop = new AbortController();
  const t0 = performance.now();
  const done = fetchSegments({
    cache,
    segments: manifest.segments.map((_, i) => i),
    peers: () => Promise.resolve([peer]),
    stats: { bytesReceived: 0, bytesRefetched: 0, corruptChunks: 0 },
    concurrency: 8,
    signal: stop.signal,
  }).then(() => true, () => false);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const finished = await Promise.race([
    done,
    new Promise<false>((r) => timer = setTimeout(() => r(false), 20_000)),
  ]);
  const ms = performance.now() - t0;
  clearTimeout(timer);
  clearInterval(tick);
  stop.abort();
  await done;
  try {
    assert(finished, `not done after ${ms.toFixed(0)} ms: ${cache.doneSegments().length} of ${n}`);
    assertEquals(cache.doneSegments().length, n);
    assert(stall < 1000, `the event loop stalled for ${stall.toFixed(0)} ms`);
  } finally {
    cache.close();
    await Deno.remove(dir, { recursive: true });
  }
});

function decode(bytes: Uint8Array) {
  return fromBinary(TransferManifestSchema, bytes);
}
