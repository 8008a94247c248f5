/**
 * The chunk data plane (cluster/transfer/data_plane.ts): FetchChunks over plain TCP gives the
 * bytes gRPC gives, errors keep their codes, bad requests get a bounded answer and leave the
 * server serving, and a fetcher that cannot reach it fetches over gRPC instead.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { PlacementSchema, TransferService, TransferState } from "../../../proto/mod.ts";
import { startRpcServer, startTcpPlane } from "../../../cluster/rpc/mod.ts";
import {
  computeManifest,
  openManifest,
  startChunkServer,
  tcpChunkClient,
  transferService,
} from "../../../cluster/transfer/mod.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";
import { STORIES, transferManager } from "./stories_fixture.ts";
import { rawAnswer, withPreamble } from "../../support/raw_tcp.ts";

const CHUNK = 4096;

/** A source manager serving stories260K over TCP (and `count` of the requests it got). */
async function source(requestTimeoutMs?: number) {
  const dir = await Deno.makeTempDir();
  const m = transferManager("src", dir, CHUNK);
  await m.getManifest({ path: STORIES, model: "" });
  const served = { requests: 0 };
  const server = await startChunkServer({
    host: "127.0.0.1",
    requestTimeoutMs,
    fetchChunks: (req, signal) => {
      served.requests++;
      return m.fetchChunks(req, signal);
    },
  });
  return {
    m,
    server,
    served,
    endpoint: `127.0.0.1:${server.port}`,
    async close() {
      await server.close();
      m.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("chunks over TCP are the file's bytes, each message in a buffer of its own", async () => {
  const s = await source();
  try {
    const { manifest } = await computeManifest(STORIES, { nodeId: "x", chunkSize: CHUNK });
    const bytes = await Deno.readFile(STORIES);
    const seg = manifest.segments.findIndex((x) => x.name === "token_embd.weight");
    const n = manifest.segments[seg].chunkSha256.length;
    const chunks = Array.from({ length: n }, (_, chunk) => ({ segment: seg, chunk }));
    const client = tcpChunkClient(s.endpoint);
    let i = 0;
    for await (const c of client.fetchChunks({ sha256: manifest.sha256, chunks })) {
      const at = Number(manifest.segments[seg].offset) + c.chunk * CHUNK;
      assertEquals([c.segment, c.chunk], [seg, i++]);
      assertEquals(c.data, bytes.subarray(at, at + c.data.length), `chunk ${c.chunk}`);
      assert(c.data.buffer.byteLength - c.data.byteLength <= 64, "a buffer per message");
    }
    assertEquals(i, n);

    // Errors keep their code; the server goes on serving.
    const err = await assertRejects(async () => {
      for await (const _ of client.fetchChunks({ sha256: "00", chunks })) { /* none */ }
    }, ConnectError);
    assertEquals((err as ConnectError).code, Code.NotFound);

    // A fetcher that stops after one chunk (its signal aborted) leaves it serving too.
    const ac = new AbortController();
    for await (const _ of client.fetchChunks({ sha256: manifest.sha256, chunks }, ac)) {
      ac.abort();
      break;
    }
    let again = 0;
    for await (const _ of client.fetchChunks({ sha256: manifest.sha256, chunks })) again++;
    assertEquals(again, n);
  } finally {
    await s.close();
  }
});

Deno.test("a bad chunk request gets a bounded error; the server keeps serving", async () => {
  const s = await source(300);
  const answer = (bytes: Uint8Array, end = true, preamble = "DLC1") =>
    rawAnswer(s.server.port, withPreamble(preamble, bytes), end);
  const trailer = (b: Uint8Array) => {
    assertEquals(b[0], 0x80, "a trailer");
    assertEquals(new DataView(b.buffer).getUint32(1), b.length - 5);
    return JSON.parse(new TextDecoder().decode(b.subarray(5)));
  };
  try {
    // A connection naming no protocol the plane serves.
    const unknown = trailer(await answer(Uint8Array.of(0, 0, 0, 3), true, "HTTP"));
    assertEquals(unknown.code, Code.InvalidArgument);
    assert(unknown.message.includes('"HTTP"'), unknown.message);
    // A length past the limit: refused before anything is read or allocated.
    const huge = trailer(await answer(Uint8Array.of(0xff, 0xff, 0xff, 0xff)));
    assertEquals(huge.code, Code.ResourceExhausted);
    // A body that is no FetchChunksRequest.
    const junk = trailer(await answer(Uint8Array.of(0, 0, 0, 3, 0xff, 0xff, 0xff)));
    assertEquals(junk.code, Code.InvalidArgument);
    assert(junk.message.length < 1100, junk.message);
    // A request that ends early.
    const cut = await answer(Uint8Array.of(0, 0, 0, 9, 1));
    assertEquals(trailer(cut).code, Code.DataLoss);
    // A client that never finishes its request is cut off after the request timeout.
    const t0 = performance.now();
    assertEquals((await answer(Uint8Array.of(0, 0, 0, 9, 1), false)).length, 0);
    assert(performance.now() - t0 < 5000, "cut off after the timeout");
    // Random requests (fuzz): each gets a trailer or, for a truncated one, the timeout.
    let seed = 17;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    for (let i = 0; i < 40; i++) {
      const body = Uint8Array.from({ length: Math.floor(rand() * 40) }, () => rand() * 256);
      const len = i % 4 === 0 ? Math.floor(rand() * 2 ** 32) : body.length;
      const req = new Uint8Array(4 + body.length);
      new DataView(req.buffer).setUint32(0, len >>> 0);
      req.set(body, 4);
      const got = await answer(req);
      if (got.length) assert(typeof trailer(got).code === "number");
    }
    // Still serving.
    const { manifest } = await computeManifest(STORIES, { nodeId: "x", chunkSize: CHUNK });
    let n = 0;
    for await (
      const _ of tcpChunkClient(s.endpoint).fetchChunks({
        sha256: manifest.sha256,
        chunks: [{ segment: 1, chunk: 0 }],
      })
    ) n++;
    assertEquals(n, 1);
  } finally {
    await s.close();
  }
});

Deno.test("an unreachable chunk server is an Unavailable error", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const err = await assertRejects(async () => {
    for await (const _ of tcpChunkClient(`127.0.0.1:${port}`).fetchChunks({ sha256: "00" })) {
      /* none */
    }
  }, ConnectError);
  assertEquals((err as ConnectError).code, Code.Unavailable);
});

/** A fetcher's Prepare of stories260K's layers from `src`, which advertises `dataEndpoint`. */
async function fetchWith(dataEndpoint: (s: Awaited<ReturnType<typeof source>>) => string) {
  const s = await source();
  const dstDir = await Deno.makeTempDir();
  const srcRpc = await startRpcServer({
    port: 0,
    routes: (r) => r.service(TransferService, transferService(s.m)),
  });
  // The source's GetManifest answers name its data plane.
  const getManifest = s.m.getManifest.bind(s.m);
  s.m.getManifest = async (req) => ({ ...await getManifest(req), dataEndpoint: dataEndpoint(s) });
  const answer = await s.m.getManifest({ path: STORIES, model: "" });
  const modelId = openManifest(answer, undefined).manifest.modelId;
  let adopted!: () => void;
  const done = new Promise<void>((r) => adopted = r);
  const dst = transferManager("dst", dstDir, CHUNK, {
    members: () => [
      { id: "src", endpoint: `127.0.0.1:${srcRpc.port}`, model: modelId, status: "alive" },
    ],
    adopt: (_id, file) => {
      file.close();
      adopted();
      return Promise.resolve();
    },
  });
  try {
    const placement = create(PlacementSchema, {
      totalLayers: 5,
      stages: [{ nodeId: "src", fromLayer: 0, toLayer: 2 }, {
        nodeId: "dst",
        fromLayer: 2,
        toLayer: 5,
      }],
    });
    await dst.prepare({ manifest: answer, placement } as never);
    await done;
    const [p] = dst.status();
    assertEquals(p.state, TransferState.CACHED);
    assertEquals(p.bytesDone, p.bytesTotal);
    return s.served.requests;
  } finally {
    dst.close();
    await srcRpc.close();
    await s.close();
    await Deno.remove(dstDir, { recursive: true });
  }
}

Deno.test("a fetcher takes chunks over the data plane a source advertises, else over gRPC", async () => {
  assert((await fetchWith((s) => s.endpoint)) > 0, "no chunk came over TCP");
  // A data plane it cannot reach (a firewall opening only the RPC port): gRPC.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closed = `127.0.0.1:${(l.addr as Deno.NetAddr).port}`;
  l.close();
  assertEquals(await fetchWith(() => closed), 0);
  // A plane that answers with an error before any chunk (an agent of another version, which
  // does not know this preamble; a plane at its limit): this call goes over gRPC.
  const other = await startTcpPlane({
    host: "127.0.0.1",
    protocols: { DLX9: { serve: () => Promise.resolve() } },
  });
  try {
    assertEquals(await fetchWith(() => `127.0.0.1:${other.port}`), 0);
  } finally {
    await other.close();
  }
});
