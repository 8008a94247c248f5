/** The event hub, request/membership trackers, log levels and ClusterService handlers. */
import { create } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import {
  clusterService,
  EventHub,
  LeveledLog,
  MembershipTracker,
  RequestTracker,
} from "../../../cluster/events/mod.ts";
import {
  ExecuteCommandResponseSchema,
  NodeInfoSchema,
  NodeState,
  PlacementSchema,
  RequestEventSchema,
  RequestPhase,
  UpdateKind,
} from "../../../proto/mod.ts";
import { RpcFailure } from "../../../cluster/rpc/mod.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";

const req = (id: string) => ({
  case: "request" as const,
  value: create(RequestEventSchema, { requestId: id }),
});

Deno.test("EventHub keeps a bounded history, oldest first", () => {
  let t = 0;
  const hub = new EventHub({ history: 3, now: () => ++t });
  for (const id of ["a", "b", "c", "d", "e"]) hub.publish(req(id));
  const recent = hub.recent();
  assertEquals(recent.map((e) => (e.event.value as { requestId: string }).requestId), [
    "c",
    "d",
    "e",
  ]);
  assertEquals(recent.map((e) => e.timestampUnixMs), [3, 4, 5]);
});

Deno.test("a slow subscriber loses its oldest events and the sequence shows the gap", async () => {
  const hub = new EventHub({ queue: 2 });
  const sub = hub.subscribe();
  for (const id of ["a", "b", "c", "d"]) hub.publish(req(id));
  const first = await sub.next();
  const second = await sub.next();
  assertEquals([first.value!.sequence, second.value!.sequence], [3, 4]);
  assertEquals(sub.dropped, 2);
  sub.close();
  assertEquals((await sub.next()).done, true);
  assertEquals(hub.subscribers, 0);
});

Deno.test("subscriptions filter by kind and deliver their prefix first", async () => {
  const hub = new EventHub();
  const node = create(NodeInfoSchema, { id: "n1", state: NodeState.ALIVE });
  const sub = hub.subscribe({
    kinds: [UpdateKind.MEMBERSHIP],
    prefix: [{ timestampUnixMs: 1, event: { case: "membership", value: { node } as never } }],
  });
  hub.publish(req("x"));
  new MembershipTracker(hub).publish(create(NodeInfoSchema, { id: "n2", state: NodeState.ALIVE }));
  const a = (await sub.next()).value!;
  const b = (await sub.next()).value!;
  assertEquals([a.sequence, b.sequence], [1, 2]);
  assertEquals(a.event.case, "membership");
  assertEquals(b.event.case, "membership");
  sub.close();
});

Deno.test("MembershipTracker reports each node's previous state", () => {
  const hub = new EventHub();
  const t = new MembershipTracker(hub);
  for (const s of [NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD]) {
    t.publish(create(NodeInfoSchema, { id: "b", state: s }), 1000);
  }
  const prev = hub.recent().map((e) =>
    e.event.case === "membership" ? [e.event.value.previousState, e.event.value.node!.state] : []
  );
  assertEquals(prev, [
    [NodeState.UNSPECIFIED, NodeState.ALIVE],
    [NodeState.ALIVE, NodeState.SUSPECT],
    [NodeState.SUSPECT, NodeState.DEAD],
  ]);
});

Deno.test("RequestTracker: started, first token, throttled progress, one ending", () => {
  const hub = new EventHub();
  const t = new RequestTracker(hub, { requestId: "r", headNodeId: "a", model: "m" }, 1e9);
  t.started(["a", "b"]);
  for (let i = 0; i < 50; i++) t.token();
  t.recovering("stage b died");
  t.finished(RequestPhase.COMPLETED, 12.5);
  t.finished(RequestPhase.CANCELLED);
  const phases = hub.recent().map((e) => e.event.case === "request" ? e.event.value.phase : -1);
  assertEquals(phases, [
    RequestPhase.STARTED,
    RequestPhase.FIRST_TOKEN,
    RequestPhase.RECOVERING,
    RequestPhase.COMPLETED,
  ]);
  const last = hub.recent().at(-1)!.event.value as {
    completionTokens: number;
    tokensPerSecond: number;
  };
  assertEquals([last.completionTokens, last.tokensPerSecond], [50, 12.5]);
  const started = hub.recent()[0].event.value as { stageNodeIds: string[] };
  assertEquals(started.stageNodeIds, ["a", "b"]);
});

Deno.test("LeveledLog drops lines below its level, which can change", () => {
  const lines: string[] = [];
  const l = new LeveledLog((_lvl, msg) => lines.push(msg), "info");
  l.log("debug", "d1");
  l.log("info", "i1");
  l.level = "debug";
  l.log("debug", "d2");
  l.level = "error";
  l.log("warn", "w1");
  assertEquals(lines, ["i1", "d2"]);
});

function fakeContext(): { ctx: HandlerContext; abort: () => void } {
  const c = new AbortController();
  return { ctx: { signal: c.signal } as HandlerContext, abort: () => c.abort() };
}

const placement = create(PlacementSchema, { model: "m", totalLayers: 4, epoch: 2n });

function service(calls: string[] = []) {
  const hub = new EventHub();
  hub.publish(req("old"));
  const impl = clusterService({
    hub,
    localId: "a",
    snapshot: () => ({
      members: [
        create(NodeInfoSchema, { id: "a", state: NodeState.ALIVE }),
        create(NodeInfoSchema, { id: "b", state: NodeState.SUSPECT }),
      ],
      placement,
    }),
    commands: {
      drain: (dry) => {
        calls.push(`drain ${dry}`);
        return { message: "drained a", placement };
      },
      replan: (model, dry) => {
        calls.push(`replan ${model} ${dry}`);
        return { message: "re-planned" };
      },
      setLogLevel: (level, dry) => {
        calls.push(`level ${level} ${dry}`);
        return { message: `level ${level}` };
      },
      forward: (node, r) => {
        calls.push(`forward ${node} ${r.command.case}`);
        return Promise.resolve(create(ExecuteCommandResponseSchema, { message: `on ${node}` }));
      },
    },
  });
  return { hub, impl };
}

Deno.test("StreamUpdates with a snapshot: history, members, placement, then live events", async () => {
  const { hub, impl } = service();
  const { ctx, abort } = fakeContext();
  const stream = (impl.streamUpdates as (
    r: unknown,
    c: HandlerContext,
  ) => AsyncIterable<{ sequence: bigint; event: { case: string } }>)(
    { kinds: [], includeSnapshot: true },
    ctx,
  );
  const got: string[] = [];
  const seqs: bigint[] = [];
  setTimeout(() => hub.publish(req("live")), 10);
  for await (const m of stream) {
    got.push(m.event.case);
    seqs.push(m.sequence);
    if (got.length === 5) abort();
  }
  assertEquals(got, ["request", "membership", "membership", "placement", "request"]);
  assertEquals(seqs, [1n, 2n, 3n, 4n, 5n]);
  assertEquals(hub.subscribers, 0, "the subscription ends with the stream");
});

Deno.test("ExecuteCommand runs local commands and forwards the others", async () => {
  const calls: string[] = [];
  const { impl } = service(calls);
  const exec = impl.executeCommand as (r: unknown) => Promise<{ message: string }>;
  assertEquals(
    (await exec({ command: { case: "drainNode", value: { nodeId: "a" } }, dryRun: true })).message,
    "drained a",
  );
  assertEquals(
    (await exec({ command: { case: "drainNode", value: { nodeId: "b" } }, dryRun: false }))
      .message,
    "on b",
  );
  await exec({ command: { case: "replan", value: { model: "" } }, dryRun: false });
  await exec({ command: { case: "setLogLevel", value: { nodeId: "", level: "debug" } } });
  await exec({ command: { case: "setLogLevel", value: { nodeId: "c", level: "warn" } } });
  assertEquals(calls, [
    "drain true",
    "forward b drainNode",
    "replan  false",
    "level debug undefined",
    "forward c setLogLevel",
  ]);
  for (
    const [bad, text] of [
      [{ command: { case: "setLogLevel", value: { nodeId: "", level: "loud" } } }, "loud"],
      [{ command: { case: undefined } }, "no command"],
      [{ command: { case: "drainNode", value: { nodeId: "" } } }, "node_id"],
    ] as const
  ) {
    let message = "";
    try {
      await exec(bad);
    } catch (e) {
      message = (e as Error).message;
      assertEquals((e as { rpcCode?: string }).rpcCode, "invalid_argument");
    }
    assert(message.includes(text), message);
  }
});

Deno.test("StreamUpdates viewers are bounded; a closed one makes room", async () => {
  const impl = clusterService({
    hub: new EventHub(),
    localId: "a",
    snapshot: () => ({ members: [] }),
    commands: {} as never,
    maxViewers: 2,
  });
  const stream = impl.streamUpdates as (r: unknown, c: HandlerContext) => AsyncGenerator<unknown>;
  const open = () => {
    const { ctx, abort } = fakeContext();
    return { abort, it: stream({ kinds: [], includeSnapshot: true }, ctx) };
  };
  const a = open();
  const b = open();
  // A snapshot with no members and no placement is empty: each viewer waits for events.
  const pa = a.it.next();
  const pb = b.it.next();
  await new Promise((r) => setTimeout(r, 10));
  const err = await assertRejects(() => open().it.next(), RpcFailure);
  assertEquals((err as RpcFailure).rpcCode, "resource_exhausted");
  assert(err.message.includes("at most 2"), err.message);
  a.abort();
  assertEquals((await pa).done, true);
  const c = open();
  const pc = c.it.next();
  await new Promise((r) => setTimeout(r, 10));
  b.abort();
  c.abort();
  assertEquals([(await pb).done, (await pc).done], [true, true]);
});
