/** InferenceService.Forward, the stage side (cluster/pipeline/forward_service.ts): what a frame may ask. */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  FORWARD_METHOD,
  FORWARD_PREAMBLE,
  type ForwardContext,
} from "../../../cluster/pipeline/mod.ts";
import { openToWire } from "../../../cluster/pipeline/wire.ts";
import type { StageFrame, StageResult } from "../../../cluster/pipeline/stage_frame.ts";
import { openTcpBidi } from "../../../cluster/rpc/mod.ts";
import { ActivationFrameSchema, Dtype } from "../../../proto/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { stageOnPlane } from "../../support/stage_plane.ts";

/**
 * Layers 0..2 of stories260K as a stage, with no stage after it (it answers hidden rows) unless
 * `extra` gives it links.
 */
async function firstStage(extra: Partial<ForwardContext> = {}) {
  const { host, plane } = await stageOnPlane(2, 1 << 20, extra);
  const call = () =>
    openTcpBidi(`127.0.0.1:${plane.port}`, FORWARD_PREAMBLE, FORWARD_METHOD, 1 << 20);
  return { host, plane, call };
}

/**
 * An opening for layers 0..2, as the only stage; with `replyDirect` given, before a stage n1
 * (stageBeforeHeldTail), whose tail sends the tokens to the head when it is true.
 */
function opening(sessionId: string, responseDtype = Dtype.F32, replyDirect?: boolean) {
  const open = openToWire({
    sessionId,
    maxContext: 64,
    model: "stories260K",
    epoch: 0n,
    downstream: replyDirect === undefined ? [] : [{ nodeId: "n1", from: 2, to: 5 }],
    ...(replyDirect ? { replyDirect: true } : {}),
  }, Dtype.F32);
  open.responseDtype = responseDtype;
  return create(ActivationFrameSchema, { sessionId, step: 0n, toLayer: 2, open });
}

/** The error a call's next answer fails with (null: it answered). */
async function refusal(call: { receive(): Promise<unknown> }): Promise<unknown> {
  return await call.receive().then(() => null, (e: unknown) => e);
}

Deno.test("a stage answers hidden rows in the opening's response_dtype, and refuses one that is no Dtype", async () => {
  const { host, plane, call } = await firstStage();
  const embd = host.stage.config.nEmbd;
  try {
    for (const dtype of [Dtype.F32, Dtype.F16]) {
      const c = await call();
      c.send(opening(`s${dtype}`, dtype));
      await c.receive();
      // Token ids only (dtype unset): before, the answer was f32 whatever the opening asked.
      c.send(create(ActivationFrameSchema, { sessionId: `s${dtype}`, step: 1n, tokens: [1, 2] }));
      const r = await c.receive();
      assert(r?.result.case === "hidden", `${r?.result.case}`);
      assertEquals(r.result.value.dtype, dtype);
      assertEquals(r.result.value.data.byteLength, 2 * embd * (dtype === Dtype.F16 ? 2 : 4));
      c.abort();
    }
    const c = await call();
    c.send(opening("bad", 7 as Dtype));
    const e = await refusal(c);
    assert(e instanceof ConnectError && e.code === Code.InvalidArgument, String(e));
    assert(e.rawMessage.includes("open.response_dtype 7"), e.rawMessage);
    c.abort();
    await new Promise((r) => setTimeout(r, 50));
    assertEquals(host.openSessions, 0);
  } finally {
    await plane.close();
  }
});

Deno.test("positions must be the session's next ones, and rows need tokens; anything else is refused", async () => {
  const { host, plane, call } = await firstStage();
  const frame = (id: string, step: bigint, f: Record<string, unknown>) =>
    create(ActivationFrameSchema, { sessionId: id, step, ...f });
  try {
    // The next positions are taken, given or not.
    const c = await call();
    c.send(opening("ok"));
    await c.receive();
    c.send(frame("ok", 1n, { tokens: [1, 2], positions: [0, 1] }));
    assertEquals((await c.receive())?.result.case, "hidden");
    c.send(frame("ok", 2n, { tokens: [3] }));
    assertEquals((await c.receive())?.result.case, "hidden");
    c.send(frame("ok", 3n, { tokens: [4], positions: [3] }));
    assertEquals((await c.receive())?.result.case, "hidden");
    // A rollback (position 1 again) was run as if appended: now refused.
    c.send(frame("ok", 4n, { tokens: [5], positions: [1] }));
    let e = await refusal(c);
    assert(e instanceof ConnectError && e.code === Code.InvalidArgument, String(e));
    assert(e.rawMessage.includes("positions must be the session's next 1 (4..4)"), e.rawMessage);
    c.abort();
    // Rows without tokens were dropped without a word.
    for (
      const [id, f] of [
        ["data", { shape: [1, host.stage.config.nEmbd], data: new Uint8Array(4 * 16) }],
        ["pos", { positions: [0] }],
      ] as const
    ) {
      const d = await call();
      d.send(opening(id));
      await d.receive();
      d.send(frame(id, 1n, f));
      e = await refusal(d);
      assert(e instanceof ConnectError && e.code === Code.InvalidArgument, `${id}: ${e}`);
      assert(/but no tokens/.test(e.rawMessage), e.rawMessage);
      d.abort();
    }
    await new Promise((r) => setTimeout(r, 50));
    assertEquals(host.openSessions, 0);
  } finally {
    await plane.close();
  }
});

Deno.test("a stage shutting down runs the sessions open on it to their end and refuses new ones", async () => {
  let draining = false;
  const { host, plane, call } = await firstStage({ draining: () => draining });
  const frame = (id: string, step: bigint, tokens: number[]) =>
    create(ActivationFrameSchema, { sessionId: id, step, tokens });
  try {
    const c = await call();
    c.send(opening("open"));
    await c.receive();
    c.send(frame("open", 1n, [1, 2]));
    assertEquals((await c.receive())?.result.case, "hidden");
    draining = true;
    // The session opened before goes on: its head would otherwise replay it all elsewhere.
    c.send(frame("open", 2n, [3]));
    assertEquals((await c.receive())?.result.case, "hidden");
    // A new one is refused as UNAVAILABLE (a stage failure its head re-places), saying why.
    const d = await call();
    d.send(opening("new"));
    const e = await refusal(d);
    assert(e instanceof ConnectError && e.code === Code.Unavailable, String(e));
    assert(e.rawMessage.includes("n0 is shutting down"), e.rawMessage);
    d.abort();
    assertEquals(host.openSessions, 1);
    c.abort();
    await new Promise((r) => setTimeout(r, 50));
    assertEquals(host.openSessions, 0);
  } finally {
    await plane.close();
  }
});

/** Every answer a call gives until its end: each frame's result kind, and "closed" when it says so. */
async function answers(call: { receive(): Promise<unknown> }): Promise<string[]> {
  const got: string[] = [];
  for (;;) {
    const r = await call.receive() as
      | { result: { case?: string }; closed: boolean }
      | undefined;
    if (r === undefined) return got;
    got.push(`${r.result.case ?? "none"}${r.closed ? " closed" : ""}`);
  }
}

Deno.test("every frame is answered once, in order: a half-close, a cancel, a close with rows", async () => {
  const { host, plane, call } = await firstStage();
  const frame = (id: string, step: bigint, extra = {}) =>
    create(ActivationFrameSchema, { sessionId: id, step, tokens: [1, 2, 3], ...extra });
  try {
    // A one-shot client: everything sent, then a half-close. It is no cancel: the rows are
    // answered (after the early close on cancel, they were dropped).
    const a = await call();
    a.send(opening("a"));
    a.send(frame("a", 1n));
    a.end();
    assertEquals(await answers(a), ["none", "hidden"]);
    // A close without rows behind a running frame cancels it: both answered, "closed". (The
    // frame's pass is held 300 ms, so the cancel comes while it runs.)
    const step = host.step.bind(host);
    host.step = async (id, f) => {
      if (id === "b") await new Promise((r) => setTimeout(r, 300));
      return await step(id, f);
    };
    const b = await call();
    b.send(opening("b"));
    await b.receive();
    b.send(frame("b", 1n));
    b.send(create(ActivationFrameSchema, { sessionId: "b", step: 2n, close: { reason: "x" } }));
    assertEquals(await answers(b), ["none closed", "none closed"]);
    // A close that carries rows runs them first (after the chunk before it).
    const c = await call();
    c.send(opening("c"));
    await c.receive();
    c.send(frame("c", 1n, { partial: true }));
    c.send(create(ActivationFrameSchema, {
      sessionId: "c",
      step: 2n,
      tokens: [4],
      close: { reason: "done" },
    }));
    assertEquals(await answers(c), ["hidden", "hidden closed"]);
    await new Promise((r) => setTimeout(r, 20));
    assertEquals(host.openSessions, 0);
  } finally {
    await plane.close();
  }
});

/**
 * Layers 0..2 of stories260K before a stage that holds every answer until released (the tail
 * of a chain that sends its tokens to the head directly answers each frame with `replied`).
 */
async function stageBeforeHeldTail(chunkRows?: number) {
  /** Frames that reached the next stage, and the release of each one's answer. */
  const down: { tokens: number[]; release: () => void }[] = [];
  const next = {
    nodeId: "n1",
    from: 2,
    to: 5,
    openSession: () =>
      Promise.resolve({
        step: (f: StageFrame) =>
          new Promise<StageResult>((resolve) =>
            down.push({
              tokens: Array.from(f.tokens),
              release: () => resolve({ kind: "replied", computeMs: 0 }),
            })
          ),
        close: () => Promise.resolve(),
      }),
  };
  return { ...await firstStage({ linkTo: () => next, chunkRows }), down };
}

Deno.test("a session whose tail replies to its head directly: the next frame runs before the last one's answer is back", async () => {
  const { plane, call, down } = await stageBeforeHeldTail();
  /** Waits up to `ms` for `n` frames to have reached the next stage. */
  const reached = async (n: number, ms: number) => {
    for (const end = Date.now() + ms; down.length < n && Date.now() < end;) {
      await new Promise((r) => setTimeout(r, 10));
    }
    return down.length >= n;
  };
  try {
    for (const replyDirect of [true, false]) {
      down.length = 0;
      const sessionId = `direct-${replyDirect}`;
      const c = await call();
      c.send(opening(sessionId, Dtype.F32, replyDirect));
      await c.receive();
      // The head has the first token from the tail already and sends the next frame at once.
      c.send(create(ActivationFrameSchema, { sessionId, step: 1n, tokens: [1, 7] }));
      c.send(create(ActivationFrameSchema, { sessionId, step: 2n, tokens: [9] }));
      if (replyDirect) {
        // Before, a stage read no frame of such a session until the one before was answered:
        // each pass waited for the `replied` to come back along the chain.
        assert(await reached(2, 3000), `${down.length} frame(s) reached the next stage`);
        assertEquals(down.map((d) => d.tokens), [[1, 7], [9]]);
      } else {
        // Tokens come back along the chain: the head sends after each answer, and a frame sent
        // early still waits its turn (the chain's answers stay one per frame, in order).
        assert(await reached(1, 3000));
        assert(!(await reached(2, 200)), "the second frame ran before the first was answered");
      }
      down[0].release();
      const first = await c.receive();
      assertEquals([first?.step, first?.replied], [1n, true]);
      assert(await reached(2, 3000));
      down[1].release();
      const second = await c.receive();
      assertEquals([second?.step, second?.replied], [2n, true]);
      c.abort();
    }
  } finally {
    await plane.close();
  }
});

Deno.test("a direct-reply frame this stage sends down in chunks is answered before the next frame runs: no rows between its chunks", async () => {
  const { plane, call, down } = await stageBeforeHeldTail(2);
  try {
    const sessionId = "chunked-direct";
    const c = await call();
    c.send(opening(sessionId, Dtype.F32, true));
    await c.receive();
    // A head that sends early (buggy, hostile, or speculating): 6 rows, sent down in chunks of
    // 2, then one more frame at once. Run beside the first, the second frame's row went down
    // (and into this stage's KV cache) between the first one's chunks.
    c.send(create(ActivationFrameSchema, { sessionId, step: 1n, tokens: [1, 2, 3, 4, 5, 6] }));
    c.send(create(ActivationFrameSchema, { sessionId, step: 2n, tokens: [99] }));
    let released = 0;
    for (const end = Date.now() + 5000; down.length < 4 && Date.now() < end;) {
      while (released < down.length) down[released++].release();
      await new Promise((r) => setTimeout(r, 10));
    }
    while (released < down.length) down[released++].release();
    assertEquals(down.map((d) => d.tokens), [[1, 2], [3, 4], [5, 6], [99]]);
    assertEquals((await c.receive())?.step, 1n);
    assertEquals((await c.receive())?.step, 2n);
    c.abort();
  } finally {
    await plane.close();
  }
});

Deno.test("a stream that breaks while its session opens leaves no session behind", async () => {
  // The opening and, in the same write, an envelope no sender writes (the compressed flag): the
  // stream broke while the session was opening, closeEarly found none to close, and the session
  // was set after it: every such stream held a KV slot here (and at the next stages) for good.
  // The next stage takes 100 ms to open: the window in which the stream breaks.
  let opened = 0, closed = 0;
  const next = {
    nodeId: "n1",
    from: 2,
    to: 5,
    openSession: async () => {
      await new Promise((r) => setTimeout(r, 100));
      opened++;
      return {
        step: () => Promise.resolve<StageResult>({ kind: "replied", computeMs: 0 }),
        close: () => (closed++, Promise.resolve()),
      };
    },
  };
  const { host, plane } = await firstStage({ linkTo: () => next });
  try {
    for (let i = 0; i < 3; i++) {
      const frame = opening(`leak-${i}`, Dtype.F32, false);
      frame.tokens = [1];
      const body = toBinary(ActivationFrameSchema, frame);
      const env = new Uint8Array(5 + body.length);
      new DataView(env.buffer).setUint32(1, body.length);
      env.set(body, 5);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: plane.port });
      const bytes = [
        new TextEncoder().encode(FORWARD_PREAMBLE),
        env,
        new Uint8Array([1, 0, 0, 0, 0]),
      ];
      const all = new Uint8Array(bytes.reduce((n, b) => n + b.length, 0));
      let at = 0;
      for (const b of bytes) all.set(b, (at += b.length) - b.length);
      await conn.write(all);
      const buf = new Uint8Array(4096);
      while ((await conn.read(buf).catch(() => null)) !== null) { /* until the plane closes */ }
      conn.close();
    }
    for (let i = 0; i < 50 && (host.openSessions > 0 || closed < opened); i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assertEquals(host.openSessions, 0, "sessions left open on this stage");
    assertEquals([opened, closed], [3, 3], "sessions left open on the next stage");
  } finally {
    plane.close();
  }
});

Deno.test("token ids at 2^31 or above are refused with the id sent, not wrapped", async () => {
  // They wrapped to negative ids: a tail took them silently, and in a prefix passed on to the
  // next stage they failed as INTERNAL ("a bug in the agent").
  const { plane, call } = await firstStage();
  try {
    const c = await call();
    c.send(opening("big"));
    await c.receive();
    c.send(create(ActivationFrameSchema, { sessionId: "big", step: 1n, tokens: [1, 4294967295] }));
    const e = await refusal(c);
    assert(e instanceof ConnectError && e.code === Code.InvalidArgument, String(e));
    assert(e.rawMessage.includes("token id 4294967295"), e.rawMessage);
    c.abort();
    const p = await call();
    const open = opening("prefix");
    open.open!.prefixTokens = [1, 2147483648];
    p.send(open);
    const pe = await refusal(p);
    assert(pe instanceof ConnectError && pe.code === Code.InvalidArgument, String(pe));
    assert(pe.rawMessage.includes("prefix_tokens holds token id 2147483648"), pe.rawMessage);
    p.abort();
  } finally {
    plane.close();
  }
});

Deno.test("a stream that sends no opening is ended after openingMs, not the 5-minute idle bound", async () => {
  // A thousand streams that sent nothing held the RPC port's connections for 5 minutes each.
  const { plane, call } = await firstStage({ idleMs: 60_000, openingMs: 200 });
  try {
    const c = await call();
    const t0 = performance.now();
    const e = await refusal(c);
    const took = performance.now() - t0;
    assert(e instanceof ConnectError && e.code === Code.DeadlineExceeded, String(e));
    assert(e.rawMessage.includes("no opening within 0.2 s"), e.rawMessage);
    assert(took < 5_000, `${took} ms`);
    c.abort();
  } finally {
    plane.close();
  }
});
