/**
 * Prepare between two real TransferManagers over gRPC: what a fetching node reports while it
 * fetches its stage's layers (a deploy's progress and `llmctl models status` read it).
 */
import { basename } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  GetManifestResponseSchema,
  PlacementSchema,
  TransferManifestSchema,
  type TransferProgress,
  TransferService,
  TransferState,
} from "../../../proto/mod.ts";
import { startRpcServer } from "../../../cluster/rpc/mod.ts";
import { openManifest, transferService } from "../../../cluster/transfer/mod.ts";
import { signedManifest } from "../../../cluster/transfer/manifest.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import type { TransferHost } from "../../../cluster/transfer/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { STORIES, transferManager } from "./stories_fixture.ts";

const CHUNK = 4096;

/**
 * A source manager serving stories260K over gRPC and a fetching manager "dst" that sees it as a
 * member; `adopt` is what dst does with the model once fetched.
 */
async function sourceAndFetcher(
  adopt: () => void,
  over: (modelId: string) => Partial<TransferHost> = () => ({}),
) {
  const dstDir = await Deno.makeTempDir();
  const { src, server, close: closeSource } = await startSource();
  const published: TransferProgress[] = [];
  const answer = await src.getManifest({ path: STORIES, model: "" });
  const modelId = openManifest(answer, undefined).manifest.modelId;
  const dst = transferManager("dst", dstDir, CHUNK, {
    members: () => [
      { id: "src", endpoint: `127.0.0.1:${server.port}`, model: modelId, status: "alive" },
      { id: "dst", endpoint: "127.0.0.1:1", model: "", status: "alive" },
    ],
    publish: (p) => published.push(p),
    adopt: (_id, file) => {
      file.close();
      adopt();
      return Promise.resolve();
    },
    ...over(modelId),
  });
  const close = async () => {
    dst.close();
    await closeSource();
    await Deno.remove(dstDir, { recursive: true });
  };
  return { answer, modelId, dst, published, close };
}

/** A source manager serving stories260K over gRPC. */
async function startSource() {
  const dir = await Deno.makeTempDir();
  const src = transferManager("src", dir, CHUNK);
  const server = await startRpcServer({
    port: 0,
    routes: (r) => r.service(TransferService, transferService(src)),
  });
  const close = async () => {
    await server.close();
    src.close();
    await Deno.remove(dir, { recursive: true });
  };
  return { src, server, close };
}

Deno.test("a fetching node reports no cached state until its layers are here", async () => {
  let adopted!: () => void;
  const adoptedP = new Promise<void>((r) => adopted = r);
  const { answer, dst, published, close } = await sourceAndFetcher(() => adopted());
  const orig = await openGGUF(STORIES);
  try {
    const n = orig.metadata.number("llama.block_count");
    assert(n >= 2, `stories260K has ${n} layers`);
    const placement = create(PlacementSchema, {
      totalLayers: n,
      stages: [
        { nodeId: "src", fromLayer: 0, toLayer: 1 },
        { nodeId: "dst", fromLayer: 1, toLayer: n },
      ],
    });
    const first = await dst.prepare({ manifest: answer, placement } as never);
    assertEquals(first.state, TransferState.PENDING);
    await adoptedP;
    const last = published.at(-1)!;
    assertEquals(last.state, TransferState.CACHED);
    assertEquals(last.bytesDone, last.bytesTotal);
    // The header arrives first; reported as cached with its bytes done, the node looked
    // finished to a deploy before its layers were asked for.
    for (const p of published) {
      if (p.state === TransferState.CACHED) {
        assertEquals(p.bytesTotal, last.bytesTotal, "cached before the layers were counted");
      }
    }
    assert(published.some((p) => p.state === TransferState.FETCHING && p.bytesDone < p.bytesTotal));
    assert(last.bytesTotal < BigInt(orig.fileSize), "only the node's own layers were counted");
  } finally {
    orig.close();
    await close();
  }
});

Deno.test("a fetch undeployed before it finishes never serves the model", async () => {
  let adopts = 0;
  const { answer, modelId, dst, published, close } = await sourceAndFetcher(() => adopts++);
  try {
    const placement = create(PlacementSchema, {
      totalLayers: 5,
      stages: [{ nodeId: "dst", fromLayer: 0, toLayer: 5 }],
    });
    // 200 kB/s: stories260K's 1.2 MB take seconds, and the undeploy comes after 300 ms.
    await dst.prepare({ manifest: answer, placement, rateLimitBytesPerSecond: 200_000n } as never);
    await new Promise((r) => setTimeout(r, 300));
    await dst.undeploy({ model: modelId, localOnly: true, purge: false } as never);
    for (let i = 0; i < 100 && published.at(-1)?.state !== TransferState.FAILED; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assertEquals(published.at(-1)?.state, TransferState.FAILED, "the fetch ended");
    await new Promise((r) => setTimeout(r, 200));
    assertEquals(adopts, 0, "an undeployed model is not served when its fetch ends");
  } finally {
    await close();
  }
});

Deno.test("deployed again right after an undeploy: the stopped fetch ends, a fresh one serves", async () => {
  let adopted!: () => void;
  const adoptedP = new Promise<void>((r) => adopted = r);
  const { answer, modelId, dst, published, close } = await sourceAndFetcher(() => adopted());
  try {
    const placement = create(PlacementSchema, {
      totalLayers: 5,
      stages: [{ nodeId: "dst", fromLayer: 0, toLayer: 5 }],
    });
    await dst.prepare({ manifest: answer, placement, rateLimitBytesPerSecond: 200_000n } as never);
    await new Promise((r) => setTimeout(r, 100));
    await dst.undeploy({ model: modelId, localOnly: true, purge: false } as never);
    // At once, before the stopped fetch has ended: it must not take this deploy down with it.
    await dst.prepare({ manifest: answer, placement, rateLimitBytesPerSecond: 0n } as never);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      adoptedP,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error("the second deploy never served")), 10_000);
      }),
    ]).finally(() => clearTimeout(timer));
    assertEquals(published.at(-1)?.state, TransferState.CACHED);
    // The stopped fetch's end did not write over the new deploy's state.
    assert(!published.at(-1)!.detail.includes("superseded"), published.at(-1)!.detail);
  } finally {
    await close();
  }
});

/**
 * A node that serves a file of the deployed model's name and size (`flip`: with one byte
 * changed, as a fine-tune exported again under its old name) when a Prepare comes; what it
 * unserved and whether it adopted the deployed bytes.
 */
async function servingACopy(flip: boolean, changedSinceLoad = false) {
  const dir = await Deno.makeTempDir();
  const copy = `${dir}/${basename(STORIES)}`;
  const bytes = await Deno.readFile(STORIES);
  if (flip) bytes[bytes.length - 1] ^= 0x55;
  await Deno.writeFile(copy, bytes);
  // The mtime the agent recorded when it opened the file (a rewrite since changes it).
  const loadedAt = (await Deno.stat(copy)).mtime!.getTime() - (changedSinceLoad ? 5000 : 0);
  const unserved: string[] = [];
  let adopts = 0;
  let served: { id: string; path?: string; mtimeMs?: number } | undefined;
  const { answer, modelId, dst, close } = await sourceAndFetcher(() => adopts++, (id) => {
    served = { id, path: copy, mtimeMs: loadedAt };
    return {
      served: () => served,
      unserve: (id: string) => {
        unserved.push(id);
        served = undefined;
        return Promise.resolve(true);
      },
    };
  });
  const placement = create(PlacementSchema, {
    totalLayers: 5,
    stages: [{ nodeId: "dst", fromLayer: 0, toLayer: 5 }],
  });
  const first = await dst.prepare({ manifest: answer, placement } as never);
  const refetch = flip || changedSinceLoad;
  for (let i = 0; i < 200 && refetch && !adopts; i++) await new Promise((r) => setTimeout(r, 50));
  await close();
  await Deno.remove(dir, { recursive: true });
  return { first, modelId, unserved, adopts };
}

Deno.test("a node serving other bytes under the deployed model's id fetches the deployed ones", async () => {
  const { first, modelId, unserved, adopts } = await servingACopy(true);
  // Before, the id (name@size) matched and the Prepare answered "source" at once: the node
  // kept serving the old weights for the new model, silently.
  assertEquals(first.state, TransferState.PENDING);
  assertEquals(unserved, [modelId]);
  assertEquals(adopts, 1, "the deployed bytes were fetched and served");
});

Deno.test("a node already serving the deployed bytes keeps them (no refetch)", async () => {
  const { first, unserved, adopts } = await servingACopy(false);
  assertEquals(first.state, TransferState.SOURCE);
  assertEquals(unserved, []);
  assertEquals(adopts, 0);
});

Deno.test("a local file rewritten since it was loaded does not vouch for the bytes served", async () => {
  // The file on disk now holds the deployed bytes, but the agent loaded it before the rewrite:
  // before, its sha256 (read from disk now) answered "already served" and the old weights stayed.
  const { first, modelId, unserved, adopts } = await servingACopy(false, true);
  assertEquals(first.state, TransferState.PENDING);
  assertEquals(unserved, [modelId]);
  assertEquals(adopts, 1);
});

Deno.test("a cache written under an older id answers to the id deployed now", async () => {
  const dstDir = await Deno.makeTempDir();
  const { src, server, close } = await startSource();
  try {
    const answer = await src.getManifest({ path: STORIES, model: "" });
    const m = openManifest(answer, undefined).manifest;
    const placement = (stages: { nodeId: string; fromLayer: number; toLayer: number }[]) =>
      create(PlacementSchema, { totalLayers: 5, stages });
    const dst = (onAdopt: () => void) =>
      transferManager("dst", dstDir, CHUNK, {
        members: () => [
          { id: "src", endpoint: `127.0.0.1:${server.port}`, model: m.modelId, status: "alive" },
          { id: "dst", endpoint: "127.0.0.1:1", model: "", status: "alive" },
          { id: "x", endpoint: "127.0.0.1:1", model: "", status: "alive" },
        ],
        adopt: (_id, file) => {
          file.close();
          onAdopt();
          return Promise.resolve();
        },
      });
    // Before an upgrade: layer 0 fetched, the cache's manifest written with the id of then.
    let adopted!: () => void;
    let done = new Promise<void>((r) => adopted = r);
    const before = dst(() => adopted());
    await before.prepare({
      manifest: answer,
      placement: placement([{ nodeId: "dst", fromLayer: 0, toLayer: 1 }]),
    } as never);
    await done;
    before.close();
    const oldId = m.modelId.replace(/#.*/, "");
    const old = create(TransferManifestSchema, { ...m, modelId: oldId });
    await Deno.writeFile(
      `${dstDir}/${m.sha256}/manifest.bin`,
      toBinary(
        GetManifestResponseSchema,
        signedManifest(toBinary(TransferManifestSchema, old), undefined, []),
      ),
    );
    // After: the cache is scanned, the same bytes deployed under today's id, x planned too.
    done = new Promise<void>((r) => adopted = r);
    const after = dst(() => adopted());
    await after.scanCache();
    await after.prepare({
      manifest: answer,
      placement: placement([
        { nodeId: "dst", fromLayer: 0, toLayer: 1 },
        { nodeId: "x", fromLayer: 1, toLayer: 5 },
      ]),
    } as never);
    await done;
    // Before, lookups by today's id found nothing: the deploy's wait for x was skipped, and a
    // re-planned range was never fetched (its stage load then failed).
    assertEquals(after.planReady(m.modelId, ["dst"]), false, "x is planned and does not offer it");
    await after.ensure(m.modelId, { from: 0, to: 5 });
    const mine = after.status().find((s) => s.nodeId === "dst")!;
    assertEquals(mine.model, m.modelId);
    assertEquals(mine.bytesDone, BigInt(m.fileSize));
    after.close();
  } finally {
    await close();
    await Deno.remove(dstDir, { recursive: true });
  }
});
