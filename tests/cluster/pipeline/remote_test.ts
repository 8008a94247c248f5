/** Stages behind real RPC servers on loopback (in this process): the wire path of the pipeline. */
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import {
  type ChainHop,
  FORWARD_METHOD,
  FORWARD_PREAMBLE,
  forwardHandler,
  forwardProtocol,
  Head,
  RemoteStageLink,
  StageBusyError,
  StageHost,
  type StageLink,
  StageLinkError,
  StaleEpochError,
} from "../../../cluster/pipeline/mod.ts";

import { initCertificates } from "../../../cluster/tls/mod.ts";
import {
  createRpcTransport,
  openTcpBidi,
  type RpcProtocol,
  type RpcServer,
  type RpcTransport,
  startRpcServer,
  startTcpPlane,
  type TcpPlane,
} from "../../../cluster/rpc/mod.ts";
import { ActivationFrameSchema, Dtype, InferenceService } from "../../../proto/mod.ts";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { openToWire } from "../../../cluster/pipeline/wire.ts";
import { orTimeout } from "../../../cluster/deadline.ts";
import { rawAnswer, withPreamble } from "../../support/raw_tcp.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";
import { stageOnPlane } from "../../support/stage_plane.ts";

const GOLDEN = JSON.parse(await Deno.readTextFile(`${FIXTURES}/golden/stories260K__once.json`));

/** How a test's stages reach each other: an RPC protocol, or the TCP data plane. */
type Hop = RpcProtocol | "tcp";

/**
 * Real stages behind RPC servers; stage n<i> reaches n<i+1> over its own transport. With
 * `hop` "tcp" each stage also serves Forward on a TCP data plane, which links use first
 * (`planeUnreachable`: "closed", they are given a closed port instead; "busy", the planes refuse
 * every stream; either way the links fall back to gRPC).
 */
async function serveStages(
  ranges: [number, number][],
  dtype = Dtype.F32,
  epochs?: bigint[],
  hop: Hop = "grpc",
  planeUnreachable: false | "closed" | "busy" = false,
) {
  const file = await openGGUF(`${FIXTURES}/models/stories260K.gguf`);
  const servers: RpcServer[] = [];
  const planes: TcpPlane[] = [];
  const hosts: StageHost[] = [];
  const transports = new Map<string, RpcTransport>();
  const endpoints = new Map<string, string>();
  /** Forward streams each stage's plane served. */
  const planeStreams: number[] = [];
  const linkTo = (hop: ChainHop): StageLink =>
    new RemoteStageLink(hop.nodeId, hop.from, hop.to, transports.get(hop.nodeId)!, {
      dtype,
      dataEndpoint: endpoints.get(hop.nodeId),
    });
  for (const [from, to] of ranges) {
    const host = new StageHost(
      await LlamaStage.load(file, createReferenceBackend(), { from, to }),
      "stories260K",
    );
    const i = hosts.length;
    hosts.push(host);
    const ctx = {
      nodeId: `n${i}`,
      host: () => host,
      epoch: () => epochs?.[i] ?? 1n,
      linkTo,
    };
    servers.push(
      await startRpcServer({
        port: 0,
        routes: (r) => r.service(InferenceService, { forward: forwardHandler(ctx) }),
      }),
    );
    if (hop === "tcp") {
      // "busy": the plane refuses every Forward stream (its limit is 0).
      const protocol = forwardProtocol(ctx, 64 << 20, planeUnreachable === "busy" ? 0 : 1024);
      planeStreams.push(0);
      planes.push(
        await startTcpPlane({
          host: "127.0.0.1",
          protocols: {
            [FORWARD_PREAMBLE]: {
              maxConnections: protocol.maxConnections,
              serve: (conn, closing) => {
                planeStreams[i]++;
                return protocol.serve(conn, closing);
              },
            },
          },
        }),
      );
    }
  }
  file.close();
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = (closed.addr as Deno.NetAddr).port;
  closed.close();
  for (const [i, srv] of servers.entries()) {
    transports.set(
      `n${i}`,
      await createRpcTransport(`127.0.0.1:${srv.port}`, {
        gzip: false,
        protocol: hop === "tcp" ? "grpc" : hop,
      }),
    );
    if (planes[i]) {
      const port = planeUnreachable === "closed" ? closedPort : planes[i].port;
      endpoints.set(`n${i}`, `127.0.0.1:${port}`);
    }
  }
  const close = async () => {
    for (const t of transports.values()) t.close();
    await Promise.all([...servers.map((s) => s.close(100)), ...planes.map((p) => p.close())]);
  };
  return { servers, planes, planeStreams, hosts, linkTo, close };
}

// gRPC takes the lean path for Forward (cluster/rpc/grpc_stream.ts) at both ends; the Connect
// protocol goes through Connect's client and handler, which must give the same ids.
// The TCP data plane (cluster/rpc/tcp_plane.ts) carries the same messages off HTTP/2; a stage
// whose plane cannot be reached is still reached over gRPC.
for (
  const [dtype, protocol, unreachable] of [
    [Dtype.F32, "grpc"],
    [Dtype.F16, "grpc"],
    [Dtype.F32, "connect"],
    [Dtype.F32, "tcp"],
    [Dtype.F16, "tcp"],
    [Dtype.F32, "tcp", "closed"],
    [Dtype.F32, "tcp", "busy"],
  ] as [Dtype, Hop, ("closed" | "busy")?][]
) {
  const over = unreachable ? `gRPC, their data planes ${unreachable},` : protocol;
  Deno.test(`three stages over ${over} on loopback (${Dtype[dtype]} activations)`, async () => {
    const ranges: [number, number][] = [[0, 2], [2, 4], [4, 5]];
    const { hosts, linkTo, planeStreams, close } = await serveStages(
      ranges,
      dtype,
      undefined,
      protocol,
      unreachable ?? false,
    );
    try {
      const links: StageLink[] = hosts.map((h, i) =>
        linkTo({ nodeId: `n${i}`, from: h.range.from, to: h.range.to })
      );
      const head = new Head({ chain: () => Promise.resolve(links), epoch: () => 1n });
      const r = await head.generate({
        requestId: "x",
        promptTokens: GOLDEN.prompt_tokens,
        maxTokens: 32,
        sampling: { temperature: 0 },
        isEog: () => false,
        maxContext: 256,
      });
      // f32 activations are exact; f16 halves the bytes and still gives the golden on this model
      // (its greedy margins are wide), which is what makes --activation-dtype f16 usable.
      assertEquals(r.tokens.map((t) => t.id), GOLDEN.greedy_ids.slice(0, 32));
      // Sessions are freed on every stage once the request ends.
      await new Promise((res) => setTimeout(res, 50));
      for (const h of hosts) assertEquals(h.openSessions, 0);
      if (protocol === "tcp") {
        // One stream per session and stage; none when the planes cannot be reached.
        assertEquals(planeStreams, unreachable ? [0, 0, 0] : [1, 1, 1]);
      }
    } finally {
      await close();
    }
  });
}

Deno.test("a stage on another placement epoch refuses the session at its hop, by name", async () => {
  // n0 agrees with the head (epoch 7); n1, further down, plans with epoch 1.
  const { hosts, linkTo, close } = await serveStages([[0, 2], [2, 5]], Dtype.F32, [7n, 1n]);
  try {
    const links = hosts.map((h, i) =>
      linkTo({ nodeId: `n${i}`, from: h.range.from, to: h.range.to })
    );
    const first = links[0];
    const e = await first.openSession({
      sessionId: "stale",
      maxContext: 64,
      model: "stories260K",
      epoch: 7n,
      sampling: { temperature: 0 },
      downstream: [{ nodeId: "n1", from: 2, to: 5 }],
    }).then(() => null, (e) => e);
    assert(e instanceof StaleEpochError, `expected StaleEpochError, got ${e}`);
    assertEquals(e.nodeId, "n1");
    assert(/n1 plans with placement epoch 1, the session with 7/.test(e.message), e.message);
    await new Promise((r) => setTimeout(r, 50));
    for (const h of hosts) assertEquals(h.openSessions, 0, "nothing stays open");
  } finally {
    await close();
  }
});

for (const hop of ["grpc", "tcp"] as const) {
  Deno.test(`a stage that runs another range than the chain chose it by refuses as stale (${hop})`, async () => {
    // n1 runs [2, 4) but the head's view (an announcement since replaced) says [2, 5): run as
    // asked it would have been a tail without the last layer. Found as an e2e failure: after a
    // kill -9, the re-plan moved a tail's layers while the head still read the old range, and
    // the client got "stage [3, 4) is not the tail" as its request's error.
    const { hosts, linkTo, close } = await serveStages(
      [[0, 2], [2, 4], [4, 5]],
      Dtype.F32,
      undefined,
      hop,
    );
    try {
      const open = (downstream: ChainHop[]) =>
        linkTo({ nodeId: "n0", from: 0, to: 2 }).openSession({
          sessionId: `stale-range-${downstream.length}`,
          maxContext: 64,
          model: "stories260K",
          epoch: 1n,
          sampling: { temperature: 0 },
          downstream,
        }).then(() => null, (e) => e);
      for (
        const [downstream, named] of [
          [
            [{ nodeId: "n1", from: 2, to: 5 }],
            "n1 runs layers [2, 4), the session asked for [2, 5)",
          ],
          [
            [{ nodeId: "n2", from: 3, to: 5 }],
            "n2 runs layers [4, 5), the session asked for [3, 5)",
          ],
        ] as const
      ) {
        const e = await open([...downstream]);
        assert(e instanceof StaleEpochError, `expected StaleEpochError, got ${e}`);
        assertEquals(e.nodeId, downstream[0].nodeId);
        assert(e.message.includes(named), e.message);
      }
      await new Promise((r) => setTimeout(r, 50));
      for (const h of hosts) assertEquals(h.openSessions, 0, "nothing stays open");
      // The head reads the chain again (no stage blamed) and gets the output of a whole chain.
      let reads = 0;
      const head = new Head({
        chain: () => {
          const whole = hosts.map((h, i) =>
            linkTo({ nodeId: `n${i}`, from: h.range.from, to: h.range.to })
          );
          return Promise.resolve(
            reads++ === 0 ? [whole[0], linkTo({ nodeId: "n1", from: 2, to: 5 })] : whole,
          );
        },
        epoch: () => 1n,
      }, { maxRecoveries: 0 });
      const r = await head.generate({
        requestId: "stale-range",
        promptTokens: GOLDEN.prompt_tokens,
        maxTokens: 8,
        sampling: { temperature: 0 },
        isEog: () => false,
        maxContext: 64,
      });
      assertEquals(r.tokens.map((t) => t.id), GOLDEN.greedy_ids.slice(0, 8));
      assertEquals(r.failures, [], "a stale view blames nobody");
      assertEquals(reads, 2);
    } finally {
      await close();
    }
  });

  Deno.test(`a broken hop further down the chain (${hop}) is reported with the failing stage's name`, async () => {
    const { hosts, linkTo, servers, planes, close } = await serveStages(
      [[0, 2], [2, 4], [4, 5]],
      Dtype.F32,
      undefined,
      hop,
    );
    try {
      const head = new Head({
        chain: () =>
          Promise.resolve(
            hosts.map((h, i) => linkTo({ nodeId: `n${i}`, from: h.range.from, to: h.range.to })),
          ),
      }, { maxRecoveries: 0 });
      let n = 0;
      const e = await head.generate({
        requestId: "broken",
        promptTokens: GOLDEN.prompt_tokens,
        maxTokens: 32,
        sampling: { temperature: 0 },
        isEog: () => false,
        maxContext: 256,
        // The tail's server goes away after 4 tokens: n1's stream to it breaks.
        onToken: () => {
          if (++n === 4) {
            servers[2].close(0);
            planes[2]?.close();
          }
        },
      }).then(() => null, (e) => e);
      assert(e, "the generation should fail without a replacement");
      assert(/last: n2: \[unavailable\]/.test(e.message), `the failure names n2: ${e.message}`);
    } finally {
      await close();
    }
  });
}

Deno.test("decodeValues copies views at any offset (Node Buffers from gzip are pooled views)", async () => {
  const { Buffer } = await import("node:buffer");
  const pool = Buffer.alloc(64);
  const view = pool.subarray(4, 12); // 2 floats at byte offset 4
  new DataView(pool.buffer, pool.byteOffset).setFloat32(4, 1.5, true);
  new DataView(pool.buffer, pool.byteOffset).setFloat32(8, -2, true);
  const { decodeValues } = await import("../../../cluster/pipeline/mod.ts");
  assertEquals(Array.from(decodeValues(view, [2], Dtype.F32)), [1.5, -2]);
});

Deno.test("a stage whose certificate comes from another CA fails the step, nothing escapes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dllm-rogue-ca-" });
  await initCertificates({ dir: `${dir}/ours`, nodes: ["head"] });
  await initCertificates({ dir: `${dir}/theirs`, nodes: ["rogue"] });
  const files = (d: string, id: string) => ({
    cert: `${dir}/${d}/${id}.crt`,
    key: `${dir}/${d}/${id}.key`,
    ca: `${dir}/${d}/ca.crt`,
  });
  const server = await startRpcServer({ port: 0, tls: files("theirs", "rogue"), routes: () => {} });
  const transport = await createRpcTransport(`127.0.0.1:${server.port}`, {
    tls: files("ours", "head"),
  });
  try {
    const link = new RemoteStageLink("rogue", 0, 5, transport);
    // The handshake fails when the session opens: a stage failure naming the stage, so the head
    // re-places its layers like a dead one's (nothing escapes as an unhandled rejection).
    const e = await link.openSession({
      sessionId: "s",
      maxContext: 16,
      model: "m",
      epoch: 0n,
      downstream: [],
    }).then(() => null, (e) => e);
    assert(e instanceof StageLinkError, `expected StageLinkError, got ${e}`);
    assertEquals(e.nodeId, "rogue");
    assert(/certificate/.test(e.message), e.message);
  } finally {
    transport.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** The frame opening a greedy session on a tail of stories260K. */
function opening(sessionId: string, step: bigint) {
  return create(ActivationFrameSchema, {
    sessionId,
    step,
    open: openToWire({
      sessionId,
      maxContext: 64,
      model: "stories260K",
      epoch: 0n,
      sampling: { temperature: 0 },
      downstream: [],
    }, Dtype.F32),
  });
}

/** The whole of stories260K as one stage behind a TCP data plane, and a Forward call to it. */
async function wholeStageOnPlane(idleMs?: number, lost?: (nodeId: string) => AbortSignal) {
  const { host, plane } = await stageOnPlane(5, 1 << 20, { idleMs, lost });
  const call = await openTcpBidi(
    `127.0.0.1:${plane.port}`,
    FORWARD_PREAMBLE,
    FORWARD_METHOD,
    1 << 20,
  );
  return { host, plane, call };
}

Deno.test("a stream whose head goes silent is ended after the idle bound and its KV cache freed", async () => {
  const { host, plane, call } = await wholeStageOnPlane(200);
  try {
    call.send(opening("quiet", 0n));
    await call.receive();
    assertEquals(host.openSessions, 1);
    // The head sends nothing more (and never closes its connection).
    let timer: ReturnType<typeof setTimeout> | undefined;
    const e = await Promise.race([
      call.receive().then(() => null, (e) => e),
      new Promise((r) => (timer = setTimeout(() => r("still open after 5 s"), 5000))),
    ]);
    clearTimeout(timer);
    assert(e instanceof ConnectError && e.code === Code.DeadlineExceeded, String(e));
    assert(/no frame for 0.2 s/.test(e.message), e.message);
    assertEquals(host.openSessions, 0, "the session was freed");
    call.abort();
  } finally {
    await plane.close();
  }
});

Deno.test("a stream whose sender gossip declares gone is ended at once and its KV cache freed", async () => {
  const gone = new AbortController();
  const asked: string[] = [];
  const { host, plane, call } = await wholeStageOnPlane(undefined, (id) => {
    asked.push(id);
    return gone.signal;
  });
  try {
    const open = opening("orphan", 0n);
    open.open!.sender = "stage-a";
    call.send(open);
    await call.receive();
    assertEquals([host.openSessions, asked], [1, ["stage-a"]]);
    // stage-a lost power: no FIN, no more frames. Before, the session stayed for the idle
    // bound (5 minutes), and the head's replay opened another beside it.
    gone.abort(new Error("gossip declared stage-a dead"));
    const e = await call.receive().then(() => null, (e) => e);
    assert(e instanceof ConnectError && e.code === Code.Unavailable, String(e));
    assert(/stage-a, which opened this stream, is gone/.test(e.message), e.message);
    assertEquals(host.openSessions, 0, "the session was freed");
    call.abort();
  } finally {
    await plane.close();
  }
});

/** A link from agent "head-x" to the whole stage on the plane at `port`; greedy sessions on it. */
async function senderLink(port: number) {
  const transport = await createRpcTransport("127.0.0.1:1");
  const link = new RemoteStageLink("n0", 0, 5, transport, {
    dataEndpoint: `127.0.0.1:${port}`,
    sender: "head-x",
  });
  const open = (sessionId: string) =>
    link.openSession({
      sessionId,
      maxContext: 64,
      model: "stories260K",
      epoch: 0n,
      sampling: { temperature: 0 },
      downstream: [],
    });
  return { transport, open };
}

Deno.test("a sender declared gone mid-frame: the link sees the stage fail (the head replays), not a result", async () => {
  let gone = new AbortController();
  const { host, plane, call } = await wholeStageOnPlane(undefined, () => gone.signal);
  call.abort();
  const step = host.step.bind(host);
  host.step = async (id, f) => {
    await new Promise((r) => setTimeout(r, 300));
    return await step(id, f);
  };
  const { transport, open } = await senderLink(plane.port);
  try {
    // A prompt chunk and the frame after it in flight, or one whole frame: each fails as the
    // stage's failure. (A `closed` answer read as a result had the chunk "prefilled" on a freed
    // cache, and the frame failed the request with a plain error the head does not replay.)
    for (const frames of [[{ partial: true }, {}], [{}]]) {
      gone = new AbortController();
      const session = await open(`s${frames.length}`);
      const steps = frames.map((f) => session.step({ tokens: Int32Array.of(1, 2), ...f }));
      setTimeout(() => gone.abort(new Error("gossip declared head-x dead")), 100);
      for (const p of steps) {
        const e = await p.then(() => null, (e) => e);
        assert(e instanceof StageLinkError && e.nodeId === "n0", String(e));
      }
      await session.close("x");
    }
    await new Promise((r) => setTimeout(r, 20));
    assertEquals(host.openSessions, 0);
  } finally {
    transport.close();
    await plane.close();
  }
});

Deno.test("a remote link names its agent as the sender of the streams it opens", async () => {
  const asked: string[] = [];
  const { host, plane, call } = await wholeStageOnPlane(undefined, (id) => {
    asked.push(id);
    return new AbortController().signal;
  });
  call.abort();
  const { transport, open } = await senderLink(plane.port);
  try {
    const session = await open("named");
    assertEquals(asked, ["head-x"]);
    await session.close("done");
    await new Promise((r) => setTimeout(r, 20));
    assertEquals(host.openSessions, 0);
  } finally {
    transport.close();
    await plane.close();
  }
});

Deno.test("a second opening on one Forward stream is refused; the first session is freed", async () => {
  const { host, plane, call } = await wholeStageOnPlane();
  try {
    call.send(opening("s1", 0n));
    await call.receive();
    // Before the fix this opened s2 and left s1 open for good (only s2 was closed at the end).
    call.send(opening("s2", 1n));
    const e = await call.receive().then(() => null, (e) => e);
    assert(e instanceof ConnectError && e.code === Code.FailedPrecondition, String(e));
    assert(/already carries session s1/.test(e.message), e.message);
    await new Promise((r) => setTimeout(r, 50));
    assertEquals(host.openSessions, 0);
    call.abort();
  } finally {
    await plane.close();
  }
});

Deno.test("an opening whose prefix_tokens exceed the session's context is refused", async () => {
  // They are kept until the session's first frame and passed to every stage after: unbounded,
  // one opening could pin gigabytes on each.
  const { host, plane, call } = await wholeStageOnPlane();
  try {
    const open = opening("big", 0n);
    open.open!.prefixTokens = Array.from({ length: 65 }, (_, i) => i + 1);
    call.send(open);
    const e = await call.receive().then(() => null, (e) => e);
    assert(e instanceof ConnectError && e.code === Code.InvalidArgument, String(e));
    assert(/prefix_tokens holds 65 ids; the session holds 64/.test(e.message), e.message);
    assertEquals(host.openSessions, 0);
    call.abort();
    // A huge max_context does not lift the bound: the session is clamped to the model's.
    const n = host.stage.config.contextLength;
    const again = await openTcpBidi(
      `127.0.0.1:${plane.port}`,
      FORWARD_PREAMBLE,
      FORWARD_METHOD,
      1 << 20,
    );
    const huge = opening("huge", 0n);
    huge.open!.maxContext = 1 << 30;
    huge.open!.prefixTokens = Array.from({ length: n + 1 }, (_, i) => (i % 200) + 1);
    again.send(huge);
    const e2 = await again.receive().then(() => null, (e) => e);
    assert(e2 instanceof ConnectError && e2.code === Code.InvalidArgument, String(e2));
    assert(e2.message.includes(`the session holds ${n}`), e2.message);
    again.abort();
  } finally {
    await plane.close();
  }
});

Deno.test("a stream to a stage whose agent gossip declares gone ends at once, naming it", async () => {
  // A host lost without a FIN: its data plane accepted the connection and then says nothing.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of silent) held.push(c);
  })();
  const transport = await createRpcTransport(
    `127.0.0.1:${(silent.addr as Deno.NetAddr).port}`,
    { gzip: false },
  );
  const lost = new AbortController();
  try {
    const link = new RemoteStageLink("n9", 0, 5, transport, {
      dataEndpoint: `127.0.0.1:${(silent.addr as Deno.NetAddr).port}`,
      lost: lost.signal,
    });
    const opening = link.openSession({
      sessionId: "silent",
      maxContext: 16,
      model: "stories260K",
      epoch: 0n,
      downstream: [],
    }).then(() => null, (e) => e);
    await new Promise((r) => setTimeout(r, 200));
    const t0 = performance.now();
    lost.abort(new Error("gossip declared n9 dead or gone"));
    const e = await orTimeout(opening, 2000, () => new Error("the stream still waits"));
    assert(performance.now() - t0 < 1000, "ended at once");
    assert(e instanceof StageLinkError, `expected StageLinkError, got ${e}`);
    assertEquals(e.nodeId, "n9");
    assert(e.message.includes("gossip declared n9 dead"), e.message);
    // A link to an agent already known gone fails without connecting.
    const again = await link.openSession({
      sessionId: "silent-2",
      maxContext: 16,
      model: "stories260K",
      epoch: 0n,
      downstream: [],
    }).then(() => null, (e) => e);
    assert(again instanceof StageLinkError && again.message.includes("n9 dead"), `${again}`);
  } finally {
    transport.close();
    silent.close();
    for (const c of held) c.close();
    await accepting.catch(() => {});
  }
});

Deno.test("a full stage, here or further down, refuses an opening as busy (a replay waits on it)", async () => {
  const { hosts, linkTo, close } = await serveStages([[0, 2], [2, 5]]);
  try {
    // n1 holds as many sessions as it may (64 by default).
    for (let i = 0; i < 64; i++) hosts[1].open(`occupant-${i}`, 16);
    for (const [first, downstream] of [[1, []], [0, [{ nodeId: "n1", from: 2, to: 5 }]]] as const) {
      const e = await linkTo({ nodeId: `n${first}`, from: first ? 2 : 0, to: first ? 5 : 2 })
        .openSession({
          sessionId: `busy-${first}`,
          maxContext: 16,
          model: "stories260K",
          epoch: 1n,
          sampling: { temperature: 0 },
          downstream: [...downstream],
        }).then(() => null, (e) => e);
      assert(e instanceof StageBusyError, `expected StageBusyError, got ${e}`);
      assert(e.message.includes("holds 64 sessions already"), e.message);
    }
    await new Promise((r) => setTimeout(r, 50));
    assertEquals(hosts[0].openSessions, 0, "the first stage freed its session");
  } finally {
    for (let i = 0; i < 64; i++) hosts[1].close(`occupant-${i}`);
    await close();
  }
});

Deno.test("a Forward stream's first frame is held to 8 MiB, refused from its header", async () => {
  const { plane } = await stageOnPlane(5, 64 << 20);
  try {
    // Anyone who reaches the port announces a 9 MiB first message: refused from its header,
    // before a byte of it is held (before: up to 256 MiB per connection, before any session).
    const header = new Uint8Array(5);
    new DataView(header.buffer).setUint32(1, 9 << 20);
    const answer = new TextDecoder().decode(
      await rawAnswer(plane.port, withPreamble(FORWARD_PREAMBLE, header)),
    );
    assert(answer.includes(`exceeds the limit of ${8 << 20}`), answer);
  } finally {
    await plane.close();
  }
});
