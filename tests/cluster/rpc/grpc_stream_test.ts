/**
 * The lean gRPC path for bidirectional streams (cluster/rpc/grpc_stream.ts): its framing, and
 * that it speaks plain gRPC to Connect's own clients as well as to itself, statuses included.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  createRpcTransport,
  EnvelopeReader,
  grpcEnvelope,
  MAX_QUEUED_BYTES,
  MAX_QUEUED_MESSAGES,
  MessageQueue,
  RAW_SERVER_STREAMS,
  RpcFailure,
  type RpcProtocol,
  startRpcServer,
  writeAndWait,
} from "../../../cluster/rpc/mod.ts";
import {
  type ActivationFrame,
  ActivationFrameSchema,
  type ForwardResponse,
  ForwardResponseSchema,
  InferenceService,
} from "../../../proto/mod.ts";
import { floodAndRead, untilSteady } from "../../support/flood.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../../support/assert.ts";
import * as http2 from "node:http2";
import { TransferService } from "../../../proto/mod.ts";
import { transferService } from "../../../cluster/transfer/mod.ts";
import { transferManager } from "../transfer/stories_fixture.ts";
import { grpcTimeoutMs } from "../../../cluster/rpc/grpc_stream.ts";
import { rawCall } from "./fixtures.ts";

function envelope(body: number[], flags = 0): Uint8Array {
  const n = body.length;
  return Uint8Array.from([flags, n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255, ...body]);
}

Deno.test("envelopes split anyhow across chunks give the same messages", () => {
  const bodies = [[1, 2, 3], [], Array.from({ length: 300 }, (_, i) => i & 255), [9]];
  const wire = Uint8Array.from(bodies.flatMap((b) => [...envelope(b)]));
  for (const size of [1, 2, 5, 7, 64, wire.length]) {
    const reader = new EnvelopeReader(1 << 20);
    const got: number[][] = [];
    for (let at = 0; at < wire.length; at += size) {
      for (const m of reader.push(wire.subarray(at, at + size))) got.push([...m]);
    }
    assertEquals(got, bodies, `chunks of ${size}`);
    assertEquals(reader.pending, 0);
  }
});

Deno.test("a big message arriving through one reused socket buffer comes out whole", () => {
  const body = Array.from({ length: 100_000 }, (_, i) => (i * 7) & 255);
  const wire = envelope(body);
  const reader = new EnvelopeReader(1 << 20);
  const socket = new Uint8Array(4096); // refilled for every chunk, as a socket's buffer is
  const got: Uint8Array[] = [];
  for (let at = 0; at < wire.length; at += socket.length) {
    const n = Math.min(socket.length, wire.length - at);
    socket.set(wire.subarray(at, at + n));
    got.push(...reader.push(socket.subarray(0, n)));
    socket.fill(0xee);
    if (at + n < wire.length) assertEquals(reader.pending, at + n);
  }
  assertEquals(got.length, 1);
  assertEquals(got[0].length, body.length);
  assert(got[0].every((b, i) => b === body[i]), "the body differs from what was sent");
  assertEquals(reader.pending, 0);
});

Deno.test("an envelope over the limit or compressed is refused with a code", () => {
  const big = new EnvelopeReader(2);
  const e = (() => {
    try {
      big.push(envelope([1, 2, 3]));
    } catch (e) {
      return e;
    }
  })();
  assert(e instanceof ConnectError && e.code === Code.ResourceExhausted, String(e));
  assertThrows(() => new EnvelopeReader(9).push(envelope([1], 1)), ConnectError, "compressed");
});

Deno.test("a message queue can be driven like a generator (next, return, throw)", async () => {
  // Connect calls throw() on a request stream when the call fails; a queue without it made
  // Connect's client fail every Forward call with "AsyncIterable does not implement throw".
  const q = new MessageQueue<number>();
  q.push(1);
  const it = q[Symbol.asyncIterator]();
  assertEquals(await it.next(), { value: 1, done: false });
  assert(typeof it.throw === "function" && typeof it.return === "function");
  assertEquals((await it.throw!(new Error("x"))).done, true);
  assertEquals((await it.next()).done, true);
  const failing = new MessageQueue<number>();
  const waiting = failing.next();
  failing.fail(new Error("gone"));
  await assertRejects(() => waiting, Error, "gone");
});

/** A Forward service: answers each frame with its step; session "boom" fails; counts ends. */
async function echoServer() {
  const ended: string[] = [];
  const server = await startRpcServer({
    port: 0,
    routes: (r) =>
      r.service(InferenceService, {
        async *forward(frames: AsyncIterable<ActivationFrame>): AsyncIterable<ForwardResponse> {
          let id = "";
          try {
            for await (const f of frames) {
              id = f.sessionId;
              if (f.sessionId === "boom") {
                throw new RpcFailure("failed_precondition", "no «session» here: 100% sure");
              }
              yield create(ForwardResponseSchema, {
                sessionId: f.sessionId,
                step: f.step,
                nextLayer: f.tokens.length,
              });
            }
          } finally {
            ended.push(id);
          }
        },
      }),
  });
  return { server, ended };
}

const frame = (sessionId: string, step: number, tokens: number[] = [1, 2]) =>
  create(ActivationFrameSchema, { sessionId, step: BigInt(step), tokens });

/** A client that runs one call over a list of frames. */
interface Caller {
  call(frames: ActivationFrame[]): Promise<ForwardResponse[]>;
  close(): void;
}

/** Clients of every kind: the lean one, Connect's gRPC client, Connect's own protocols. */
const clients: [string, (port: number) => Promise<Caller>][] = [
  ["lean gRPC client", async (port) => {
    const t = await createRpcTransport(`127.0.0.1:${port}`, { gzip: false });
    assert(t.openBidi, "a gRPC transport offers the lean path");
    return {
      call: (frames) => callLean(t, frames),
      close: () => t.close(),
    };
  }],
  ["Connect's gRPC client", (port) => {
    const t = createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` });
    return Promise.resolve({ call: (frames) => callWith(t, frames), close: () => {} });
  }],
  ...(["connect", "grpc-web"] as RpcProtocol[]).map((protocol) =>
    [`Connect's ${protocol} client`, async (port: number) => {
      const t = await createRpcTransport(`127.0.0.1:${port}`, { gzip: false, protocol });
      assertEquals(t.openBidi, undefined);
      return { call: (frames: ActivationFrame[]) => callWith(t, frames), close: () => t.close() };
    }] as [string, (port: number) => Promise<Caller>]
  ),
];

async function callWith(
  transport: Parameters<typeof createClient>[1],
  frames: ActivationFrame[],
): Promise<ForwardResponse[]> {
  const out: ForwardResponse[] = [];
  const requests = (async function* () {
    yield* frames;
  })();
  for await (const r of createClient(InferenceService, transport).forward(requests)) out.push(r);
  return out;
}

/** Forward as the lean path names it. */
const FORWARD = {
  path: `/${InferenceService.typeName}/Forward`,
  input: ActivationFrameSchema,
  output: ForwardResponseSchema,
};

async function callLean(
  t: Awaited<ReturnType<typeof createRpcTransport>>,
  frames: ActivationFrame[],
): Promise<ForwardResponse[]> {
  const call = await t.openBidi!(FORWARD);
  const out: ForwardResponse[] = [];
  // One at a time, as a stage sends: each answer before the next frame.
  for (const f of frames) {
    call.send(f);
    const r = await call.receive();
    if (r) out.push(r);
  }
  call.end();
  for (let r = await call.receive(); r; r = await call.receive()) out.push(r);
  return out;
}

for (const [name, connect] of clients) {
  Deno.test(`bidirectional Forward over one port: ${name}`, async () => {
    const { server, ended } = await echoServer();
    const client = await connect(server.port);
    try {
      const got = await client.call([frame("a", 0), frame("a", 1, [5]), frame("a", 2, [])]);
      assertEquals(got.map((r) => [r.sessionId, Number(r.step), r.nextLayer]), [
        ["a", 0, 2],
        ["a", 1, 1],
        ["a", 2, 0],
      ]);
      // A handler's error reaches the client as its code and message, encoded as gRPC says.
      const e = await client.call([frame("boom", 0)]).then(() => null, (e) => e);
      assert(e instanceof ConnectError, String(e));
      assertEquals(e.code, Code.FailedPrecondition);
      assertEquals(e.rawMessage, "no «session» here: 100% sure");
      assertEquals(ended.sort(), ["a", "boom"]);
    } finally {
      client.close();
      await server.close(100);
    }
  });
}

Deno.test("a lean call cancelled by its client ends the handler (its finally runs)", async () => {
  const { server, ended } = await echoServer();
  const t = await createRpcTransport(`127.0.0.1:${server.port}`, { gzip: false });
  try {
    const call = await t.openBidi!(FORWARD);
    call.send(frame("c", 0));
    assertEquals((await call.receive())?.sessionId, "c");
    call.abort();
    const e = await call.receive().then(() => null, (e) => e);
    assert(e instanceof ConnectError && e.code === Code.Canceled, String(e));
    for (let i = 0; i < 100 && ended.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assertEquals(ended, ["c"]);
  } finally {
    t.close();
    await server.close(100);
  }
});

Deno.test("a lean call to an agent that is not there fails UNAVAILABLE", async () => {
  const { server } = await echoServer();
  const port = server.port;
  await server.close(0);
  const t = await createRpcTransport(`127.0.0.1:${port}`, { gzip: false });
  try {
    const e = await t.openBidi!(FORWARD).then(async (call) => {
      call.send(frame("x", 0));
      return await call.receive();
    }).then(() => null, (e) => e);
    assert(e instanceof ConnectError && e.code === Code.Unavailable, String(e));
  } finally {
    t.close();
  }
});

// 4 KB frames (an activation row's size) meet the count bound; 1 MiB frames (40, under the count)
// the byte bound. One socket read holds a few small frames, and what a read brings is queued
// whole, so the bound holds to within one read.
for (const [frames, bytes] of [[500, 4096], [40, 1 << 20]]) {
  Deno.test(`a lean call sending faster than its handler reads waits on flow control, not memory (${frames} frames of ${bytes} B)`, async () => {
    let sizeWhileBusy = -1;
    let bytesWhileBusy = -1;
    const server = await startRpcServer({
      port: 0,
      routes: (r) =>
        r.service(InferenceService, {
          forward: async function* (frames: AsyncIterable<ActivationFrame>) {
            // Busy until the client's frames stop piling up in front of the handler.
            const queue = frames as unknown as MessageQueue<unknown>;
            await untilSteady(queue);
            sizeWhileBusy = queue.size;
            bytesWhileBusy = queue.bytes;
            for await (const f of frames) yield create(ForwardResponseSchema, { step: f.step });
          },
        }),
    });
    const t = await createRpcTransport(`127.0.0.1:${server.port}`, { gzip: false });
    try {
      const call = await t.openBidi!(FORWARD);
      const got = await floodAndRead(call, frames, bytes);
      assertEquals(got.length, frames, "every frame answered, in order");
      assertEquals(got.at(-1), BigInt(frames - 1));
      assert(
        sizeWhileBusy >= 1 && sizeWhileBusy <= MAX_QUEUED_MESSAGES + 16,
        `queued ${sizeWhileBusy}`,
      );
      assert(
        bytesWhileBusy <= MAX_QUEUED_BYTES + 2 * bytes + (64 << 10),
        `queued ${bytesWhileBusy} bytes (limit ${MAX_QUEUED_BYTES} + one read)`,
      );
    } finally {
      t.close();
      await server.close(100);
    }
  });
}

Deno.test("a server stream refuses a second request message at once instead of buffering the rest", async () => {
  const dir = await Deno.makeTempDir();
  const m = transferManager("src", dir, 4096);
  const server = await startRpcServer({
    port: 0,
    routes: (r) => r.service(TransferService, transferService(m)),
  });
  const session = http2.connect(`http://127.0.0.1:${server.port}`);
  try {
    const status = await new Promise<string>((resolve, reject) => {
      const req = session.request({
        ":method": "POST",
        ":path": "/distributed_llm.v1.TransferService/FetchChunks",
        "content-type": "application/grpc",
        te: "trailers",
      });
      let code = "(none)";
      const take = (h: Record<string, unknown>) => {
        if (typeof h["grpc-status"] === "string") code = h["grpc-status"];
      };
      req.on("response", take);
      req.on("trailers", take);
      req.on("error", reject);
      req.on("close", () => resolve(code));
      // Empty request envelopes, and the request half never ended (before: all kept in memory
      // until the client ended it, gigabytes for a few seconds of sending).
      req.write(new Uint8Array(5));
      req.write(new Uint8Array(5));
      req.resume();
      req.on("response", () => setTimeout(() => req.close(), 200));
    });
    assertEquals(status, "3", "INVALID_ARGUMENT: one request message");
  } finally {
    session.close();
    await server.close();
    m.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a bidi client that reads nothing holds the handler back instead of being buffered for", async () => {
  let produced = 0;
  const server = await startRpcServer({
    port: 0,
    routes: (r) =>
      r.service(InferenceService, {
        async *forward(frames: AsyncIterable<ActivationFrame>): AsyncIterable<ForwardResponse> {
          // Each answer 256 KiB (a tail's logits are about that).
          for await (const f of frames) {
            produced++;
            yield create(ForwardResponseSchema, { sessionId: "x".repeat(256 << 10), step: f.step });
          }
        },
      }),
  });
  const session = http2.connect(`http://127.0.0.1:${server.port}`);
  try {
    const req = session.request({
      ":method": "POST",
      ":path": FORWARD.path,
      "content-type": "application/grpc",
      te: "trailers",
    });
    req.on("error", () => {});
    req.pause(); // reads nothing
    const body = toBinary(ActivationFrameSchema, frame("s", 0));
    const env = new Uint8Array(5 + body.length);
    new DataView(env.buffer).setUint32(1, body.length);
    env.set(body, 5);
    for (let i = 0; i < 300; i++) req.write(env);
    await new Promise((r) => setTimeout(r, 1000));
    // Before, all 300 answers (75 MiB) were produced and buffered for a client reading nothing.
    assert(produced < 20, `${produced} answers produced for a client that reads nothing`);
    req.close();
  } finally {
    session.close();
    await server.close(100);
  }
});

Deno.test("grpc-timeout is read in all its units; malformed or beyond a timer, none", () => {
  const ms = (v: string) => grpcTimeoutMs({ "grpc-timeout": v });
  assertEquals(
    [
      "2H",
      "3M",
      "1S",
      "250m",
      "1500u",
      "2000000n",
      "0m",
      "99999999S",
      "1s",
      "1.5S",
      "123456789m",
      "",
    ]
      .map(ms),
    [
      7_200_000,
      180_000,
      1000,
      250,
      2,
      2,
      0,
      undefined,
      undefined,
      undefined,
      undefined,
      undefined,
    ],
  );
  assertEquals(grpcTimeoutMs({}), undefined);
});

Deno.test("a lean call whose grpc-timeout passes ends DEADLINE_EXCEEDED at once, its handler ended", async () => {
  const { server, ended } = await echoServer();
  const generated: string[] = [];
  const stream = await startRpcServer({
    port: 0,
    routes: (r) =>
      r.service(TransferService, {
        [RAW_SERVER_STREAMS]: {
          async *fetchChunks(_req: unknown, signal: AbortSignal) {
            // A stream that never sends: only the deadline ends it.
            await new Promise((r) => signal.addEventListener("abort", r));
            generated.push("aborted");
            yield* [];
          },
        },
      } as never),
  });
  try {
    // An idle Forward with grpc-timeout 1S stayed open until its client left, then ended OK.
    const bidi = await rawCall(
      server.port,
      FORWARD.path,
      grpcEnvelope(toBinary(ActivationFrameSchema, frame("idle", 0))),
      { headers: { "grpc-timeout": "300m" }, keepOpen: true },
    );
    assertEquals(bidi.grpcStatus, "4", bidi.grpcMessage);
    assert(bidi.grpcMessage!.includes("300 ms"), bidi.grpcMessage);
    assert(bidi.ms < 2000, `took ${bidi.ms} ms`);
    for (let i = 0; i < 100 && ended.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assertEquals(ended, ["idle"]);
    const server2 = await rawCall(
      stream.port,
      "/distributed_llm.v1.TransferService/FetchChunks",
      grpcEnvelope(new Uint8Array()),
      { headers: { "grpc-timeout": "300000u" } },
    );
    assertEquals(server2.grpcStatus, "4", server2.grpcMessage);
    assert(server2.ms < 2000, `took ${server2.ms} ms`);
    assertEquals(generated, ["aborted"]);
  } finally {
    await server.close(100);
    await stream.close(100);
  }
});

Deno.test("a server stream whose client stops reading is reset after the write bound", async () => {
  // Eight FetchChunks streams never read held a source's serve permits for good: nothing bounded
  // a write waiting for the client's window.
  let failed: unknown;
  const server = http2.createServer((_req, res) => {
    void (async () => {
      const chunk = new Uint8Array(256 << 10);
      try {
        for (let i = 0; i < 400; i++) await writeAndWait(res, chunk, 300);
      } catch (e) {
        failed = e;
      }
    })();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on("error", () => {});
  try {
    const req = session.request({ ":path": "/x" });
    req.on("error", () => {});
    req.pause(); // never reads: the window fills
    for (let i = 0; i < 100 && failed === undefined; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert(failed instanceof ConnectError && failed.code === Code.DeadlineExceeded, String(failed));
  } finally {
    session.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  }
});
