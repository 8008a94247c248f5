/** Peers' load samples relayed to StreamUpdates viewers: one stream per peer, however many watch. */
import { create } from "@bufbuild/protobuf";
import { createRouterTransport, type HandlerContext } from "@connectrpc/connect";
import { clusterService, EventHub, type PeerHandle } from "../../../cluster/events/mod.ts";
import { NodeMetricsSchema, NodeService, UpdateKind } from "../../../proto/mod.ts";
import { assertEquals } from "../../support/assert.ts";

/** A peer whose StreamMetrics counts the streams open on it and sends a sample every 5 ms. */
function peer(id: string) {
  const state = { open: 0, opened: 0 };
  const transport = createRouterTransport((r) =>
    r.service(NodeService, {
      async *streamMetrics(_req, ctx) {
        state.open++;
        state.opened++;
        try {
          while (!ctx.signal.aborted) {
            yield { metrics: create(NodeMetricsSchema, { nodeId: id }) };
            await new Promise((r) => setTimeout(r, 5));
          }
        } finally {
          state.open--;
        }
      },
    })
  );
  const handle: PeerHandle = { id, transport: () => Promise.resolve(transport) };
  return { handle, state };
}

const until = async (ok: () => boolean, what: string) => {
  for (let i = 0; i < 400 && !ok(); i++) await new Promise((r) => setTimeout(r, 5));
  if (!ok()) throw new Error(`timed out waiting for ${what}`);
};

Deno.test("StreamUpdates viewers share one metrics stream per peer; the last to leave closes it", async () => {
  const b = peer("b");
  const c = peer("c");
  const impl = clusterService({
    hub: new EventHub(),
    localId: "a",
    snapshot: () => ({ members: [] }),
    peers: () => [b.handle, c.handle],
    metricsIntervalMs: 5,
    commands: {} as never,
  });
  const streamUpdates = impl.streamUpdates as (
    r: unknown,
    c: HandlerContext,
  ) => AsyncIterable<{ event: { case: string; value: { nodeId?: string } } }>;
  // Each viewer reads until it has seen samples from both peers, then keeps its stream open.
  const views = [0, 1, 2].map(() => {
    const abort = new AbortController();
    const seen = new Set<string>();
    const done = (async () => {
      for await (
        const m of streamUpdates(
          { kinds: [UpdateKind.METRICS], includeSnapshot: false },
          { signal: abort.signal } as HandlerContext,
        )
      ) {
        if (m.event.case === "metrics" && m.event.value.nodeId) seen.add(m.event.value.nodeId);
      }
    })();
    return { abort, seen, done };
  });
  await until(() => views.every((v) => v.seen.has("b") && v.seen.has("c")), "samples of b and c");
  // Three viewers, one stream on each peer (it was three: one per viewer and peer).
  assertEquals([b.state.open, c.state.open], [1, 1]);
  views[0].abort.abort();
  views[1].abort.abort();
  await Promise.all([views[0].done, views[1].done]);
  await new Promise((r) => setTimeout(r, 30));
  assertEquals([b.state.open, c.state.open], [1, 1], "a viewer still watches");
  views[2].abort.abort();
  await views[2].done;
  await until(() => b.state.open === 0 && c.state.open === 0, "the peers' streams to close");
  assertEquals([b.state.opened, c.state.opened], [1, 1]);
});
