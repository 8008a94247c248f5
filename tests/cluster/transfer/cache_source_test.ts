/**
 * The cache's ByteSource streams verified bytes into a caller's buffer (issue 17: whole segments
 * read, hashed and sliced per tensor made an 8B model's loads allocate 2 × 295 MB at a time).
 */
import { computeManifest, ModelCache } from "../../../cluster/transfer/mod.ts";
import { openGGUF, readGGUF } from "../../../model/gguf/mod.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";
import { STORIES } from "../../support/paths.ts";

const CHUNK = 4096;

/** An empty cache for stories260K, the file's bytes, and where token_embd.weight lies in it. */
async function emptyCache(dir: string) {
  const { manifest } = await computeManifest(STORIES, { nodeId: "a", chunkSize: CHUNK });
  const bytes = await Deno.readFile(STORIES);
  const cache = await ModelCache.open(dir, manifest);
  const seg = manifest.segments.findIndex((s) => s.name === "token_embd.weight");
  const start = Number(manifest.segments[seg].offset);
  const len = Number(manifest.segments[seg].length);
  return { cache, manifest, bytes, seg, start, len };
}

/** A cache holding every segment of stories260K, stored and verified. */
async function filledCache(dir: string) {
  const { cache, manifest, bytes } = await emptyCache(dir);
  for (let seg = 0; seg < manifest.segments.length; seg++) {
    const start = Number(manifest.segments[seg].offset);
    const len = Number(manifest.segments[seg].length);
    for (let c = 0; c * CHUNK < len; c++) {
      const at = start + c * CHUNK;
      await cache.writeChunk(seg, c, bytes.slice(at, Math.min(start + len, at + CHUNK)));
    }
    assert(await cache.finishSegment(seg), `segment ${seg}`);
  }
  return { cache, manifest, bytes };
}

Deno.test("CacheSource.readInto: any range inside a segment, chunk-verified, no whole-segment read", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { cache, manifest, bytes } = await filledCache(dir);
    const src = await cache.source();
    const file = await readGGUF(src);
    src.parsing = false;
    // Every tensor read goes through readInto: a whole-segment read would throw here.
    cache.readVerifiedSegment = () => Promise.reject(new Error("whole segment read"));
    const orig = await openGGUF(STORIES);
    const scratch = new Uint8Array(3 * CHUNK + 100); // pieces cross chunk boundaries
    try {
      for (const t of orig.tensors) {
        const want = await orig.readTensor(t);
        const got = new Uint8Array(want.length);
        for await (const { offset, bytes: piece } of file.readTensorChunks(t.name, scratch)) {
          got.set(piece, offset);
        }
        assertEquals(got, want, t.name);
        assertEquals(await file.readTensor(t.name), want, `${t.name} (readTensor)`);
      }
    } finally {
      orig.close();
    }
    // Unaligned ranges straddling chunks.
    const seg = manifest.segments.findIndex((s) => s.name === "token_embd.weight");
    const start = Number(manifest.segments[seg].offset);
    for (const [at, len] of [[1, 10], [CHUNK - 3, 7], [CHUNK + 5, 2 * CHUNK + 11]]) {
      const dst = new Uint8Array(len);
      await src.readInto(start + at, dst);
      assertEquals(dst, bytes.slice(start + at, start + at + len), `[${at}, +${len})`);
    }
    // A byte changed on disk is refused, never loaded, once the cache is opened again (a
    // restart: this process no longer vouches for what it wrote and hashed).
    const path = `${cache.dir}/seg-${seg}.bin`;
    const onDisk = await Deno.readFile(path);
    onDisk[CHUNK + 7] ^= 1;
    await Deno.writeFile(path, onDisk);
    cache.close();
    const reopened = await ModelCache.open(dir, manifest);
    const again = await reopened.source();
    again.parsing = false;
    await assertRejects(
      () => again.readInto(start + CHUNK, new Uint8Array(16)),
      Error,
      "changed on disk",
    );
    // The chunks before it still read, also straight into the caller's buffer.
    const whole = new Uint8Array(CHUNK);
    await again.readInto(start, whole);
    assertEquals(whole, bytes.slice(start, start + CHUNK));
    reopened.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeChunk refuses a wrong chunk; a segment of chunks verified as written is done", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { cache, bytes, seg, start, len } = await emptyCache(dir);
    const store = async (flip: number) => {
      for (let c = 0; c * CHUNK < len; c++) {
        const data = bytes.slice(start + c * CHUNK, start + Math.min(len, (c + 1) * CHUNK));
        if (flip >= c * CHUNK && flip < (c + 1) * CHUNK) data[flip - c * CHUNK] ^= 1;
        const ok = await cache.writeChunk(seg, c, data);
        assertEquals(ok, !(flip >= c * CHUNK && flip < (c + 1) * CHUNK), `chunk ${c}`);
      }
    };
    await store(len - 1); // the last byte wrong: that chunk is refused, the segment incomplete
    assertEquals(await cache.finishSegment(seg), false);
    assertEquals(cache.segmentDone(seg), false);
    await store(-1);
    assertEquals(await cache.finishSegment(seg), true);
    assertEquals(cache.segmentDone(seg), true);
    cache.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("finishSegment: chunks found on disk (a resumed fetch) are hashed against the segment digest", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { cache, manifest, bytes, seg, start, len } = await emptyCache(dir);
    const n = Math.ceil(len / CHUNK);
    assert(n >= 3);
    // In any order, verified as written: done without reading the segment back.
    for (const c of Array.from({ length: n }, (_, i) => n - 1 - i)) {
      await cache.writeChunk(
        seg,
        c,
        bytes.slice(start + c * CHUNK, start + Math.min(len, (c + 1) * CHUNK)),
      );
    }
    cache.close();
    // Another process resumes from the progress log: its chunks are on disk, not verified by it.
    const wrong = structuredClone(manifest);
    wrong.segments[seg].sha256[0] ^= 1;
    const other = await ModelCache.open(dir, wrong);
    assertEquals(other.missingChunks(seg), []);
    assertEquals(await other.finishSegment(seg), false, "a segment digest that differs is caught");
    other.close();
    // The chunks were forgotten: write them again, flip a byte on disk, resume once more.
    const again = await ModelCache.open(dir, manifest);
    for (let c = 0; c < n; c++) {
      await again.writeChunk(
        seg,
        c,
        bytes.slice(start + c * CHUNK, start + Math.min(len, (c + 1) * CHUNK)),
      );
    }
    again.close();
    const path = `${dir}/${manifest.sha256}/seg-${seg}.bin`;
    const onDisk = await Deno.readFile(path);
    onDisk[CHUNK + 1] ^= 1;
    await Deno.writeFile(path, onDisk);
    const resumed = await ModelCache.open(dir, manifest);
    assertEquals(await resumed.finishSegment(seg), false, "a byte changed on disk is caught");
    resumed.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
