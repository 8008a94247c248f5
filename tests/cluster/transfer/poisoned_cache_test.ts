/**
 * The cache is addressed by a manifest's sha256, which no fetcher can check. A forged Prepare
 * naming a genuine model's id and sha256 with another file's segments filled the genuine
 * model's cache directory with the other bytes, and a later genuine deploy adopted them without
 * fetching: the first manifest seen for a sha256 was kept, in memory and on disk.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import {
  GetManifestResponseSchema,
  PlacementSchema,
  type PrepareRequest,
  PrepareRequestSchema,
  type TransferManifest,
  TransferManifestSchema,
  TransferService,
} from "../../../proto/mod.ts";
import { startRpcServer } from "../../../cluster/rpc/mod.ts";
import {
  computeManifest,
  ModelCache,
  type TransferManager,
  transferService,
} from "../../../cluster/transfer/mod.ts";
import { sameBytes } from "../../../cluster/transfer/manifest.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { editedGGUF } from "../../support/gguf_edit.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";
import { STORIES, storiesFixture, transferManager } from "./stories_fixture.ts";

const CHUNK = 4096;
const TENSOR = "token_embd.weight";

/** An unsigned GetManifest answer of `m`. */
function answerOf(m: TransferManifest) {
  return create(GetManifestResponseSchema, {
    manifest: toBinary(TransferManifestSchema, m),
    signatureScheme: "unsigned",
  });
}

/** `m`'s answer as a cache stores it (manifest.bin). */
function stored(m: TransferManifest): Uint8Array {
  return toBinary(GetManifestResponseSchema, answerOf(m));
}

/** Assert that `got` are the genuine `TENSOR` bytes (a diff of 128 KiB takes minutes). */
function isGenuine(got: Uint8Array, want: Uint8Array, what: string): void {
  assert(
    sameBytes(got, want),
    `${what} loaded ${TENSOR} = ${got.subarray(0, 6)}..., not the genuine ${
      want.subarray(0, 6)
    }...`,
  );
}

/** `TENSOR`'s bytes in the file at `path`. */
async function tensorOf(path: string): Promise<Uint8Array> {
  const f = await openGGUF(path);
  try {
    return await f.readTensor(f.tensor(TENSOR)!);
  } finally {
    f.close();
  }
}

/**
 * A manager serving `path` over gRPC. With `forged` it is a rogue: it answers that manifest
 * and serves its own file's chunks under the forged sha256.
 */
async function server(id: string, path: string, forged?: TransferManifest) {
  const dir = await Deno.makeTempDir();
  const m = transferManager(id, dir, CHUNK);
  await m.getManifest({ path, model: "" });
  if (forged) {
    const sha = (await computeManifest(path, { nodeId: id, chunkSize: CHUNK })).manifest.sha256;
    const fetchChunks = m.fetchChunks.bind(m);
    m.fetchChunks = (req, signal) => fetchChunks({ ...req, sha256: sha }, signal);
    m.getManifest = () =>
      Promise.resolve(create(GetManifestResponseSchema, {
        ...answerOf(forged),
        availableSegments: forged.segments.map((_, i) => i),
      }));
  }
  const rpc = await startRpcServer({
    port: 0,
    routes: (r) => r.service(TransferService, transferService(m)),
  });
  return {
    endpoint: `127.0.0.1:${rpc.port}`,
    close: async () => {
      await rpc.close();
      m.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A genuine source, a rogue serving another file under its sha256, and victims of one cache. */
async function setUp() {
  const evilPath = await editedGGUF(STORIES, {
    tensors: (ts) => ts.map((t) => t.name === TENSOR ? { ...t, data: t.data.map(() => 0x41) } : t),
  });
  const genuine = (await computeManifest(STORIES, { nodeId: "src", chunkSize: CHUNK })).manifest;
  const evil = (await computeManifest(evilPath, { nodeId: "rogue", chunkSize: CHUNK })).manifest;
  // The evil file's segments under the genuine id and sha256.
  const forged = create(TransferManifestSchema, {
    ...evil,
    modelId: genuine.modelId,
    sha256: genuine.sha256,
  });
  const src = await server("src", STORIES);
  const rogue = await server("rogue", evilPath, forged);
  const cacheDir = await Deno.makeTempDir();
  const placement = create(PlacementSchema, {
    totalLayers: 2,
    stages: [{ nodeId: "x", fromLayer: 0, toLayer: 2 }],
  });

  const victims: TransferManager[] = [];
  /** Agent "x" over `cacheDir`; `sees` picks the source it finds among the members. */
  const victim = () => {
    const v = {
      sees: "rogue" as "src" | "rogue",
      served: undefined as { id: string; sha256?: string } | undefined,
      adopted: [] as PromiseWithResolvers<Uint8Array>[],
      /** What the next adopt loads: `TENSOR`'s bytes. */
      next(): Promise<Uint8Array> {
        const w = Promise.withResolvers<Uint8Array>();
        v.adopted.push(w);
        return w.promise;
      },
      m: undefined as unknown as TransferManager,
      prepare: (manifest: TransferManifest) =>
        v.m.prepare(
          create(PrepareRequestSchema, {
            manifest: answerOf(manifest),
            placement,
          }) as PrepareRequest,
        ),
    };
    v.m = transferManager("x", cacheDir, CHUNK, {
      members: () => [{
        id: v.sees,
        endpoint: v.sees === "src" ? src.endpoint : rogue.endpoint,
        model: genuine.modelId,
        status: "alive",
      }],
      served: () => v.served,
      adopt: async (id, file, _path, sha256) => {
        // Not closed: the entry keeps the parsed header, as for an agent (it holds no file).
        const bytes = await file.readTensor(file.tensor(TENSOR)!);
        v.served = { id, sha256 };
        // Once the Prepare that adopts has ended (its fetch no longer counts as running).
        const w = v.adopted.shift();
        setTimeout(() => w?.resolve(bytes), 10);
      },
    });
    victims.push(v.m);
    return v;
  };
  const close = async () => {
    // Closed again if the test did (a failed assertion leaves them open, and their connections
    // hold the servers' close).
    for (const m of victims) m.close();
    await src.close();
    await rogue.close();
    await Deno.remove(cacheDir, { recursive: true });
    await Deno.remove(evilPath);
  };
  return { genuine, forged, victim, want: await tensorOf(STORIES), cacheDir, close };
}

Deno.test("a forged manifest's cache is replaced by a genuine deploy: same agent, after a restart", async () => {
  const s = await setUp();
  try {
    for (const how of ["same agent", "restart + scanCache", "restart"]) {
      await Deno.remove(`${s.cacheDir}/${s.genuine.sha256}`, { recursive: true }).catch(() => {});
      // 1. The forged Prepare fills <cache>/<sha>/ with the rogue's bytes, and they are served.
      let x = s.victim();
      let loaded = x.next();
      await x.prepare(s.forged);
      assert((await loaded).every((b) => b === 0x41), `${how}: the forged deploy's bytes`);
      // Undeployed (served no more), the rogue gone: the genuine source is what x sees now.
      x.served = undefined;
      if (how !== "same agent") {
        x.m.close();
        x = s.victim();
        if (how === "restart + scanCache") await x.m.scanCache();
      }
      x.sees = "src";
      // 2. The genuine deploy fetches and loads the genuine bytes.
      loaded = x.next();
      await x.prepare(s.genuine);
      isGenuine(await loaded, s.want, `${how}: the genuine deploy`);
      assertEquals(x.served?.sha256, s.genuine.sha256);
      assert(Number(x.m.status()[0].bytesReceived) > 0, `${how}: fetched`);
      x.m.close();
    }
  } finally {
    await s.close();
  }
});

Deno.test("a manifest with another segment table for a sha256 in use is refused, naming both", async () => {
  const s = await setUp();
  try {
    // Served from its cache: the forged Prepare must not pull it from under the stage.
    const x = s.victim();
    x.sees = "src";
    const loaded = x.next();
    await x.prepare(s.genuine);
    isGenuine(await loaded, s.want, "the genuine deploy");
    const e = await assertRejects(() => x.prepare(s.forged), Error, "another segment table");
    assert(e.message.includes("served") && e.message.includes(s.genuine.sha256), e.message);
    x.m.close();

    // The file itself on this node: its own manifest stands.
    const y = s.victim();
    await y.m.getManifest({ path: STORIES, model: "" });
    await assertRejects(() => y.prepare(s.forged), Error, `its source file ${STORIES}`);
    y.m.close();
  } finally {
    await s.close();
  }
});

Deno.test("ModelCache.open starts clean when manifest.bin has another segment table", async () => {
  const { manifest, bytes, dir } = await storiesFixture(CHUNK);
  try {
    const seg = manifest.segments.findIndex((s) => s.name === TENSOR);
    const at = Number(manifest.segments[seg].offset);
    const fill = async (c: ModelCache) => {
      assert(await c.writeChunk(seg, 0, bytes.slice(at, at + CHUNK)), "chunk 0 stored");
      c.close();
    };
    await fill(await ModelCache.open(dir, manifest, stored(manifest)));
    // The same table under another model id (a rename): the chunks stay.
    const renamed = create(TransferManifestSchema, { ...manifest, modelId: "renamed.gguf@1#0" });
    let c = await ModelCache.open(dir, renamed, stored(renamed));
    assert(c.has(seg, 0) && !c.discarded, "a renamed manifest keeps the cache");
    c.close();
    // Another chunk hash, or another chunk size: the directory starts clean.
    const other = create(TransferManifestSchema, { ...manifest });
    other.segments = manifest.segments.map((s, i) =>
      i === seg ? { ...s, chunkSha256: s.chunkSha256.map(() => new Uint8Array(32)) } : s
    );
    c = await ModelCache.open(dir, other, stored(other));
    assert(!c.has(seg, 0) && c.discarded, "another chunk hash starts clean");
    c.close();
    await fill(await ModelCache.open(dir, manifest, stored(manifest)));
    const resized =
      (await computeManifest(STORIES, { nodeId: "a", chunkSize: 2 * CHUNK })).manifest;
    c = await ModelCache.open(dir, resized);
    assert(c.cachedBytes === 0 && c.discarded, "another chunk size starts clean");
    c.close();
    // A manifest.bin that does not decode vouches for nothing.
    await fill(await ModelCache.open(dir, manifest, stored(manifest)));
    await Deno.writeFile(`${dir}/${manifest.sha256}/manifest.bin`, new Uint8Array([0xff, 0xff]));
    c = await ModelCache.open(dir, manifest);
    assert(!c.has(seg, 0) && c.discarded, "an unreadable manifest.bin starts clean");
    c.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
