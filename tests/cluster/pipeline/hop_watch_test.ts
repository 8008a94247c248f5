/**
 * A hop's wait under watch (cluster/pipeline/hop_watch.ts): a stage that stops answering while
 * gossip still sees it (a link broken between two stages) fails the hop once a health check
 * over its RPC port fails too, or, when the frames travel its data plane, once that port stops
 * taking connections; a slow stage that answers the check is waited for.
 */
import { createRouterTransport } from "@connectrpc/connect";
import { stageOnPlane } from "../../support/stage_plane.ts";
import { HopSilentError, watchAnswer } from "../../../cluster/pipeline/hop_watch.ts";
import { RemoteStageLink, StageLinkError } from "../../../cluster/pipeline/mod.ts";
import {
  type ActivationFrame,
  type ForwardResponse,
  InferenceService,
  NodeService,
} from "../../../proto/mod.ts";
import { orTimeout } from "../../../cluster/deadline.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const WATCH = { everyMs: 40, probeMs: 60 };

Deno.test("watchAnswer: an answer in time needs no probe; a slow one is waited for while probes pass", async () => {
  let probes = 0;
  const probe = () => Promise.resolve(probes++);
  assertEquals(await watchAnswer(Promise.resolve(7), probe, WATCH), 7);
  assertEquals(probes, 0);
  assertEquals(await watchAnswer(sleep(300).then(() => 8), probe, WATCH), 8);
  assert(probes >= 3, `probed while waiting: ${probes}`);
  // An answer that fails fails the wait as it is.
  await assertRejects(() => watchAnswer(Promise.reject(new RangeError("x")), probe), RangeError);
});

Deno.test("watchAnswer: a probe that fails or does not answer in time ends the wait", async () => {
  const never = new Promise<number>(() => {});
  const failed = await assertRejects(
    () => watchAnswer(never, () => Promise.reject(new Error("connection refused")), WATCH),
    HopSilentError,
  );
  assert(failed.message.includes("connection refused"), failed.message);
  const t0 = performance.now();
  const hung = await assertRejects(
    () => watchAnswer(never, (signal) => new Promise((_, no) => signal.onabort = no), WATCH),
    HopSilentError,
  );
  assert(hung.message.includes("no answer within 60 ms"), hung.message);
  assert(performance.now() - t0 < 2000, "bounded");
});

/** A stage that opens sessions and then answers frames after `answerMs` (never: -1). */
function stage(answerMs: number, health: "ok" | "hang") {
  return createRouterTransport(({ service }) => {
    service(InferenceService, {
      async *forward(frames: AsyncIterable<ActivationFrame>) {
        for await (const f of frames) {
          if (f.open) {
            yield {} as ForwardResponse;
            continue;
          }
          if (answerMs < 0) await new Promise(() => {});
          await sleep(answerMs);
          yield { replied: true } as ForwardResponse;
        }
      },
    } as never);
    service(NodeService, {
      healthCheck: async (_req: unknown, ctx: { signal: AbortSignal }) => {
        if (health === "hang") await new Promise((_, no) => ctx.signal.onabort = no);
        return {};
      },
    } as never);
  });
}

const open = { sessionId: "s", maxContext: 64, model: "m", epoch: 0n, downstream: [] };
const frame = { tokens: Int32Array.of(1), hidden: new Float32Array(4) };

Deno.test("a stage that stops answering and fails its health check fails the hop, named", async () => {
  const link = new RemoteStageLink("c", 0, 1, stage(-1, "hang"), { watch: WATCH });
  const session = await link.openSession(open);
  // Without the watch the step waited for TCP to give up (minutes): bounded here at 5 s.
  const e = await assertRejects(
    () => orTimeout(session.step(frame), 5000, () => new Error("the hop is still waiting")),
    StageLinkError,
  );
  assertEquals((e as StageLinkError).nodeId, "c");
  assert(e.message.includes("did not answer a health check"), e.message);
});

Deno.test("a slow stage that answers its health check is waited for", async () => {
  const link = new RemoteStageLink("c", 0, 1, stage(300, "ok"), { watch: WATCH });
  const session = await link.openSession(open);
  assertEquals((await session.step(frame)).kind, "replied");
  await session.close("done");
});

/**
 * A TCP relay to `target` that can start dropping everything, as a firewall that closes a port
 * does: `block()` refuses new connections and holds every byte of the open ones, unanswered.
 */
function blackHoleRelay(target: string) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [host, port] = target.split(":");
  let blocked = false;
  const conns: Deno.Conn[] = [];
  const pump = async (from: Deno.Conn, to: Deno.Conn) => {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        if (!blocked) await to.write(buf.subarray(0, n));
      }
    } catch { /* closed */ }
  };
  (async () => {
    try {
      for await (const c of listener) {
        const up = await Deno.connect({ hostname: host, port: Number(port) });
        conns.push(c, up);
        pump(c, up);
        pump(up, c);
      }
    } catch { /* closed */ }
  })();
  return {
    endpoint: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    block() {
      blocked = true;
      listener.close();
    },
    close() {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed already */ }
      }
    },
  };
}

Deno.test("a stage whose data plane goes silent while its RPC port still answers fails the hop, named", async () => {
  // stories260K as one stage behind a real data plane, reached through the relay; its RPC port
  // (here a router transport) keeps answering health checks
  const { plane } = await stageOnPlane(5, 1 << 20, { nodeId: "c" });
  const relay = blackHoleRelay(`127.0.0.1:${plane.port}`);
  try {
    const link = new RemoteStageLink("c", 0, 5, stage(-1, "ok"), {
      watch: WATCH,
      dataEndpoint: relay.endpoint,
    });
    const session = await link.openSession({ ...open, model: "stories260K" });
    relay.block();
    // Before, the probe asked only the RPC port, which answered: the hop waited for TCP (minutes).
    const e = await assertRejects(
      () => orTimeout(session.step(frame), 5000, () => new Error("the hop is still waiting")),
      StageLinkError,
    );
    assertEquals((e as StageLinkError).nodeId, "c");
    assert(/refused|did not answer/i.test(e.message), e.message);
  } finally {
    relay.close();
    await plane.close();
  }
});
