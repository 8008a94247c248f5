/**
 * The TCP data plane (cluster/rpc/tcp_plane.ts, tcp_bidi.ts): preambles, bounds, framing and
 * bidirectional calls, with real sockets on loopback.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type ActivationFrame,
  ActivationFrameSchema,
  ForwardResponseSchema,
} from "../../../proto/mod.ts";
import {
  connectTcpPlane,
  FrameReader,
  grpcEnvelope,
  isPlaneUnavailable,
  MAX_QUEUED_BYTES,
  MAX_QUEUED_MESSAGES,
  MessageQueue,
  openTcpBidi,
  PLANE_BUSY,
  RpcFailure,
  serveTcpBidi,
  startTcpPlane,
  TRAILER_FLAG,
  writeAll,
} from "../../../cluster/rpc/mod.ts";
import { floodAndRead, untilSteady } from "../../support/flood.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";
import { rawAnswer } from "../../support/raw_tcp.ts";

const METHOD = { input: ActivationFrameSchema, output: ForwardResponseSchema };

/** What the test handler saw: streams started and finished (its `finally`). */
interface Seen {
  started: number;
  finished: number;
}

/**
 * A handler answering each frame with its step; step 99 throws a NotFound, step 98 waits
 * until the client is gone.
 */
function echo(seen: Seen) {
  return async function* (frames: AsyncIterable<ActivationFrame>) {
    seen.started++;
    try {
      for await (const f of frames) {
        if (f.step === 99n) throw new RpcFailure("not_found", "no such step");
        if (f.step === 98n) await new Promise((r) => setTimeout(r, 200));
        yield create(ForwardResponseSchema, { sessionId: f.sessionId, step: f.step });
      }
    } finally {
      seen.finished++;
    }
  };
}

async function plane(opts: { maxConnections?: number; preambleTimeoutMs?: number } = {}) {
  const seen: Seen = { started: 0, finished: 0 };
  const p = await startTcpPlane({
    host: "127.0.0.1",
    preambleTimeoutMs: opts.preambleTimeoutMs,
    protocols: {
      TEST: {
        maxConnections: opts.maxConnections,
        serve: (conn) => serveTcpBidi(conn, METHOD, echo(seen), 1 << 20),
      },
    },
  });
  return { p, seen, endpoint: `127.0.0.1:${p.port}` };
}

/** The trailer a raw answer ends with. */
function trailerOf(b: Uint8Array): { code: number; message: string } {
  let at = 0;
  for (;;) {
    assert(b.length - at >= 5, `no trailer in ${b.length} bytes`);
    const n = new DataView(b.buffer, b.byteOffset + at + 1, 4).getUint32(0);
    if (b[at] & TRAILER_FLAG) {
      return JSON.parse(new TextDecoder().decode(b.subarray(at + 5, at + 5 + n)));
    }
    at += 5 + n;
  }
}

const enc = (s: string) => new TextEncoder().encode(s);
const frame = (step: number) =>
  grpcEnvelope(
    toBinary(ActivationFrameSchema, create(ActivationFrameSchema, { step: BigInt(step) })),
  );

Deno.test("a bidirectional call on the plane: answers in order, half-close ends it cleanly", async () => {
  const { p, seen, endpoint } = await plane();
  try {
    const call = await openTcpBidi(endpoint, "TEST", METHOD, 1 << 20);
    const got: bigint[] = [];
    for (let i = 0; i < 50; i++) {
      call.send(create(ActivationFrameSchema, { sessionId: "a", step: BigInt(i) }));
      got.push((await call.receive())!.step);
    }
    assertEquals(got, Array.from({ length: 50 }, (_, i) => BigInt(i)));
    call.end();
    assertEquals(await call.receive(), undefined, "OK trailer after the half-close");
    await new Promise((r) => setTimeout(r, 20));
    assertEquals(seen, { started: 1, finished: 1 });
  } finally {
    await p.close();
  }
});

Deno.test("the plane: a handler's error keeps its code; a client gone mid-answer ends the handler", async () => {
  const { p, seen, endpoint } = await plane();
  try {
    const call = await openTcpBidi(endpoint, "TEST", METHOD, 1 << 20);
    call.send(create(ActivationFrameSchema, { step: 99n }));
    const e = await assertRejects(() => call.receive(), ConnectError);
    assertEquals((e as ConnectError).code, Code.NotFound);
    assertEquals((e as ConnectError).rawMessage, "no such step");
    assert(!isPlaneUnavailable(e), "an answered error is not the plane being unavailable");

    const gone = await openTcpBidi(endpoint, "TEST", METHOD, 1 << 20);
    gone.send(create(ActivationFrameSchema, { step: 98n }));
    gone.abort();
    await assertRejects(() => gone.receive(), ConnectError);
    for (let i = 0; i < 50 && seen.finished < 2; i++) await new Promise((r) => setTimeout(r, 20));
    assertEquals(seen, { started: 2, finished: 2 }, "the handler's finally ran");
  } finally {
    await p.close();
  }
});

Deno.test("the plane: a server that goes away without a trailer is Unavailable, marked", async () => {
  const { p, endpoint } = await plane();
  const call = await openTcpBidi(endpoint, "TEST", METHOD, 1 << 20);
  call.send(create(ActivationFrameSchema, { step: 98n }));
  await new Promise((r) => setTimeout(r, 20));
  await p.close();
  const e = await assertRejects(() => call.receive(), ConnectError);
  assertEquals((e as ConnectError).code, Code.Unavailable);
  assert(isPlaneUnavailable(e), e.message);
  // Nobody listening: Unavailable at the open.
  const refused = await assertRejects(() => openTcpBidi(endpoint, "TEST", METHOD, 1), ConnectError);
  assert(isPlaneUnavailable(refused), refused.message);
});

Deno.test("the plane: unknown preambles, silent clients and floods get bounded answers", async () => {
  const { p } = await plane({ maxConnections: 2, preambleTimeoutMs: 300 });
  try {
    const unknown = trailerOf(await rawAnswer(p.port, enc("GET / HTTP/1.1\r\n\r\n")));
    assertEquals(unknown.code, Code.InvalidArgument);
    assert(unknown.message.includes('"GET "'), unknown.message);
    // A client that never sends its preamble is cut off.
    const t0 = performance.now();
    assertEquals((await rawAnswer(p.port, new Uint8Array(0), false)).length, 0);
    assert(performance.now() - t0 < 5000, "cut off after the preamble timeout");
    // More connections than the protocol's limit: the extra one is refused at once.
    const held = await Promise.all(
      [0, 1].map(() => openTcpBidi(`127.0.0.1:${p.port}`, "TEST", METHOD, 1 << 20)),
    );
    for (const c of held) {
      c.send(create(ActivationFrameSchema, { step: 1n }));
      await c.receive();
    }
    const flood = trailerOf(await rawAnswer(p.port, enc("TEST")));
    assertEquals(flood.code, Code.ResourceExhausted);
    assert(flood.message.startsWith(PLANE_BUSY), flood.message);
    for (const c of held) c.abort();
  } finally {
    await p.close();
  }
});

Deno.test("the plane: malformed and fuzzed streams get a trailer or a close, and it keeps serving", async () => {
  const { p, endpoint } = await plane();
  try {
    // A message past the limit: refused from its header, nothing allocated for it.
    const huge = trailerOf(
      await rawAnswer(p.port, Uint8Array.of(...enc("TEST"), 0, 0xff, 0xff, 0xff, 0xff)),
    );
    assertEquals(huge.code, Code.ResourceExhausted);
    // Bytes that are no ActivationFrame.
    const junk = trailerOf(
      await rawAnswer(p.port, Uint8Array.of(...enc("TEST"), 0, 0, 0, 0, 2, 0xff, 0xff)),
    );
    assertEquals(junk.code, Code.InvalidArgument);
    // A stream cut inside a message.
    const cut = trailerOf(await rawAnswer(p.port, Uint8Array.of(...enc("TEST"), 0, 0, 0, 0, 9, 1)));
    assertEquals(cut.code, Code.DataLoss);
    // A good frame first is answered before the error.
    const first = await rawAnswer(p.port, Uint8Array.of(...enc("TEST"), ...frame(3), 7));
    assertEquals(first[0], 0, "the frame's answer comes first");
    assert(trailerOf(first).code !== 0);
    let seed = 23;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    for (let i = 0; i < 60; i++) {
      const body = Uint8Array.from({ length: Math.floor(rand() * 48) }, () => rand() * 256);
      if (i % 3 === 0 && body.length >= 5) body[0] = 0; // a plausible envelope flag
      const got = await rawAnswer(p.port, Uint8Array.of(...enc("TEST"), ...body));
      if (got.length) assert(typeof trailerOf(got).code === "number");
    }
    const call = await openTcpBidi(endpoint, "TEST", METHOD, 1 << 20);
    call.send(create(ActivationFrameSchema, { step: 5n }));
    assertEquals((await call.receive())!.step, 5n, "still serving");
    call.abort();
  } finally {
    await p.close();
  }
});

Deno.test("FrameReader: small and large messages across reads, each body its own buffer", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  const big = Uint8Array.from({ length: (5 << 20) + 3 }, (_, i) => (i * 7) & 255);
  const small = Uint8Array.of(1, 2, 3);
  const sending = (async () => {
    const c = await l.accept();
    const all = new Uint8Array([...grpcEnvelope(small), ...grpcEnvelope(small, TRAILER_FLAG)]);
    await c.write(all.subarray(0, 3)); // a header split over two reads
    await new Promise((r) => setTimeout(r, 10));
    await c.write(all.subarray(3));
    const env = grpcEnvelope(big);
    for (let at = 0; at < env.length;) at += await c.write(env.subarray(at, at + 100_000));
    c.close();
  })();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const r = new FrameReader(conn, 8 << 20);
    const a = await r.next();
    assertEquals([a!.flags, Array.from(a!.body)], [0, [1, 2, 3]]);
    assertEquals(a!.body.buffer.byteLength, 3, "a buffer of its own");
    const b = await r.next();
    assertEquals(b!.flags, TRAILER_FLAG);
    const c = await r.next();
    assertEquals(c!.body.length, big.length);
    assert(c!.body.every((x, i) => x === big[i]), "the large body arrives intact");
    assertEquals(await r.next(), null, "clean end between messages");
    await sending;
  } finally {
    conn.close();
    l.close();
  }
});

// Many small frames meet the count bound; 1 MiB frames (40 of them, under the count) the byte
// bound, which 64 frames of up to the message limit each would otherwise not have.
for (const [frames, bytes] of [[500, 0], [40, 1 << 20]]) {
  Deno.test(`the plane: a client sending faster than the handler reads waits on TCP, not on memory (${frames} frames of ${bytes} B)`, async () => {
    let queue: MessageQueue<unknown> | undefined;
    let sizeWhileBusy = -1;
    let bytesWhileBusy = -1;
    const p = await startTcpPlane({
      host: "127.0.0.1",
      protocols: {
        TEST: {
          serve: (conn) =>
            serveTcpBidi(conn, METHOD, async function* (frames) {
              queue = frames as unknown as MessageQueue<unknown>;
              // Busy until the client's frames stop piling up in front of the handler.
              await untilSteady(queue);
              sizeWhileBusy = queue.size;
              bytesWhileBusy = queue.bytes;
              for await (const f of frames) {
                yield create(ForwardResponseSchema, { step: f.step });
              }
            }, 2 << 20),
        },
      },
    });
    try {
      const call = await openTcpBidi(`127.0.0.1:${p.port}`, "TEST", METHOD, 2 << 20);
      const got = await floodAndRead(call, frames, bytes);
      assertEquals(got.length, frames, "every frame answered, in order");
      assertEquals(got.at(-1), BigInt(frames - 1));
      assert(sizeWhileBusy >= 1 && sizeWhileBusy <= MAX_QUEUED_MESSAGES, `queued ${sizeWhileBusy}`);
      assert(
        bytesWhileBusy <= MAX_QUEUED_BYTES + bytes + 64,
        `queued ${bytesWhileBusy} bytes (limit ${MAX_QUEUED_BYTES} + one frame)`,
      );
    } finally {
      await p.close();
    }
  });
}

Deno.test("the plane: any failed answer write ends the handler (not only a broken pipe)", async () => {
  // A lost host's unacked data fails the write with ETIMEDOUT, which is not a "broken
  // connection": the handler sat at its yield and its session was never freed.
  const body = frame(1);
  let fed = false;
  let closed = false;
  const readers: ((e: Error) => void)[] = [];
  const conn = {
    read(buf: Uint8Array): Promise<number | null> {
      if (closed) return Promise.reject(new Deno.errors.BadResource("closed"));
      if (!fed) {
        fed = true;
        buf.set(body);
        return Promise.resolve(body.length);
      }
      return new Promise((_, reject) => readers.push(reject));
    },
    write: () => Promise.reject(new Deno.errors.TimedOut("Connection timed out (os error 110)")),
    closeWrite: () => Promise.resolve(),
    close() {
      closed = true;
      for (const r of readers.splice(0)) r(new Deno.errors.BadResource("closed"));
    },
  } as unknown as Deno.Conn;
  const seen: Seen = { started: 0, finished: 0 };
  const served = serveTcpBidi(conn, METHOD, echo(seen), 1 << 20);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const ended = await Promise.race([
    served.then(() => true),
    new Promise((r) => (timer = setTimeout(() => r(false), 3000))),
  ]);
  clearTimeout(timer);
  conn.close();
  assert(ended, "serveTcpBidi returned");
  assertEquals(seen, { started: 1, finished: 1 });
});

Deno.test("the plane: silent sockets cannot keep a stage's own connections out", async () => {
  // Connections that never send a preamble used to fill every slot for their 10 s; the next
  // stage connection was closed without a word and its link failed the stage.
  const { p, endpoint } = await plane({ maxConnections: 4, preambleTimeoutMs: 10_000 });
  const idle: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 80; i++) {
      idle.push(await Deno.connect({ hostname: "127.0.0.1", port: p.port }));
    }
    await new Promise((r) => setTimeout(r, 100));
    const call = await openTcpBidi(endpoint, "TEST", METHOD, 1 << 20);
    call.send(create(ActivationFrameSchema, { step: 3n }));
    assertEquals((await call.receive())?.step, 3n);
    call.abort();
  } finally {
    for (const c of idle) c.close();
    await p.close();
  }
});

Deno.test("the plane: close() returns once the handlers of its connections have finished", async () => {
  const seen: Seen = { started: 0, finished: 0 };
  let cleanedUp = false;
  const slow = async function* (frames: AsyncIterable<ActivationFrame>) {
    seen.started++;
    try {
      for await (const f of frames) yield create(ForwardResponseSchema, { step: f.step });
    } finally {
      // A Forward handler frees its session here (and waits for the chain after it).
      await new Promise((r) => setTimeout(r, 200));
      cleanedUp = true;
    }
  };
  const p = await startTcpPlane({
    host: "127.0.0.1",
    protocols: { TEST: { serve: (conn) => serveTcpBidi(conn, METHOD, slow, 1 << 20) } },
  });
  const call = await openTcpBidi(`127.0.0.1:${p.port}`, "TEST", METHOD, 1 << 20);
  call.send(create(ActivationFrameSchema, { step: 1n }));
  await call.receive();
  await p.close();
  assert(cleanedUp, "the handler's cleanup ran before close() returned");
  call.abort();
});

Deno.test("the plane: a client that stops reading its answers is cut off after the write bound", async () => {
  // Without a bound the handler waited in its write for as long as the client lived: the idle
  // bound of a Forward stream only counts time without frames.
  const seen: Seen = { started: 0, finished: 0 };
  const big = async function* (frames: AsyncIterable<ActivationFrame>) {
    seen.started++;
    try {
      for await (const f of frames) {
        yield create(ForwardResponseSchema, { step: f.step, sessionId: "x".repeat(1 << 20) });
      }
    } finally {
      seen.finished++;
    }
  };
  const p = await startTcpPlane({
    host: "127.0.0.1",
    protocols: { TEST: { serve: (conn) => serveTcpBidi(conn, METHOD, big, 64 << 20, 300) } },
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: p.port });
  try {
    await conn.write(enc("TEST"));
    for (let i = 0; i < 64; i++) await conn.write(frame(i));
    // ...and never reads: 64 MiB of answers cannot fit the sockets' buffers.
    for (let i = 0; i < 100 && seen.finished === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assertEquals(seen, { started: 1, finished: 1 });
  } finally {
    conn.close();
    await p.close();
  }
});

Deno.test("writeAll: a peer that reads slowly but steadily is waited for", async () => {
  // The write bound counts from the last byte taken, not from the start of the write.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const accepted = listener.accept();
  const client = await Deno.connect({ hostname: "127.0.0.1", port });
  const server = await accepted;
  // 24 MiB at ~13 MB/s: about 2 s, well past the 300 ms bound and past the sockets' buffers.
  const bytes = new Uint8Array(24 << 20);
  let read = 0;
  const reading = (async () => {
    const buf = new Uint8Array(128 << 10);
    while (read < bytes.length) {
      const n = await client.read(buf);
      if (n === null) break;
      read += n;
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  try {
    const t0 = performance.now();
    await writeAll(server, bytes, 300);
    await reading;
    assertEquals(read, bytes.length);
    assert(performance.now() - t0 > 300, "the write took longer than its bound, reading all along");
  } finally {
    server.close();
    client.close();
    listener.close();
  }
});

Deno.test("the plane: messages stay under the first-message bound until the handler has answered", async () => {
  // A handler that reads two messages before its first answer (as no real one does): the
  // second is still held to the small bound, so an empty envelope cannot lift it.
  const p = await startTcpPlane({
    host: "127.0.0.1",
    protocols: {
      TEST: {
        serve: (conn) =>
          serveTcpBidi(
            conn,
            METHOD,
            async function* (frames) {
              const it = frames[Symbol.asyncIterator]();
              await it.next();
              const second = await it.next();
              yield create(ForwardResponseSchema, { step: second.value?.step ?? 0n });
            },
            4 << 20,
            undefined,
            1024,
          ),
      },
    },
  });
  try {
    const big = new Uint8Array(5 + 2048);
    new DataView(big.buffer).setUint32(1, 2048);
    const answer = await rawAnswer(
      p.port,
      new Uint8Array([...enc("TEST"), ...new Uint8Array(5), ...big]),
    );
    const t = trailerOf(answer);
    assertEquals(t.code, Code.ResourceExhausted, t.message);
    assert(t.message.includes("exceeds the limit of 1024"), t.message);
  } finally {
    await p.close();
  }
});

Deno.test("the plane: a port that answers nothing is Unavailable within the connect bound, then skipped a while", async () => {
  // A listener that never accepts: once its accept queue is full, the kernel drops further
  // SYNs, as a firewall that drops packets does.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const endpoint = `127.0.0.1:${port}`;
  const held: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 8192; i++) {
      try {
        held.push(
          await Deno.connect({ hostname: "127.0.0.1", port, signal: AbortSignal.timeout(300) }),
        );
      } catch {
        break; // the queue is full
      }
    }
    assert(held.length < 8192, "the accept queue never filled");
    let t0 = performance.now();
    const err = await assertRejects(() => connectTcpPlane(endpoint, "DLF1", 300), ConnectError);
    assert(isPlaneUnavailable(err), "marked: the link falls back to gRPC");
    assert(err.message.includes("no connection within 300 ms"), err.message);
    // It waited for the kernel's SYN retries before, about two minutes.
    assert(performance.now() - t0 < 2000, `${performance.now() - t0} ms`);
    t0 = performance.now();
    const again = await assertRejects(
      () => openTcpBidi(endpoint, "DLF1", METHOD, 1 << 20),
      ConnectError,
    );
    assert(
      isPlaneUnavailable(again) && again.message.includes("timed out less than"),
      again.message,
    );
    assert(performance.now() - t0 < 100, "the next session goes to gRPC at once");
  } finally {
    for (const c of held) c.close();
    listener.close();
  }
});

Deno.test("the plane: a connection evicted before its preamble is told the plane is busy, not cut silently", async () => {
  // A stage's link whose preamble was on its way, evicted by a flood, failed with "closed
  // without a status" and the head blamed a healthy stage; told PLANE_BUSY, it goes over gRPC.
  const { p } = await plane({ maxConnections: 4, preambleTimeoutMs: 10_000 });
  const conns: Deno.Conn[] = [];
  try {
    const first = await Deno.connect({ hostname: "127.0.0.1", port: p.port });
    conns.push(first);
    await new Promise((r) => setTimeout(r, 50));
    for (let i = 0; i < 80; i++) {
      conns.push(await Deno.connect({ hostname: "127.0.0.1", port: p.port }));
    }
    let text = "";
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await Promise.race([
        first.read(buf).catch(() => null),
        new Promise<null>((r) => setTimeout(() => r(null), 3000)),
      ]);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    assert(text.includes(PLANE_BUSY), JSON.stringify(text.slice(0, 200)));
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed by the plane */ }
    }
    await p.close();
  }
});
