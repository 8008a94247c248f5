/** The TUI's cluster tab with replicas: one pipeline line per replica, from placement events. */
import { create } from "@bufbuild/protobuf";
import { initialState, reduce, render } from "../../../cli/tui/mod.ts";
import {
  LayerRangeSchema,
  MembershipEventSchema,
  NodeInfoSchema,
  NodeState,
  PlacementEventSchema,
  PlacementSchema,
  ReplicaSchema,
  StageAssignmentSchema,
  StreamUpdatesResponseSchema,
} from "../../../proto/mod.ts";
import { assert } from "../../support/assert.ts";

const stage = (nodeId: string, fromLayer: number, toLayer: number) =>
  create(StageAssignmentSchema, { nodeId, fromLayer, toLayer });

Deno.test("the cluster tab draws one pipeline line per replica", () => {
  const replicas = [
    create(ReplicaSchema, { id: "a", stages: [stage("a", 0, 3), stage("b", 3, 5)] }),
    create(ReplicaSchema, { id: "c", stages: [stage("c", 0, 3), stage("d", 3, 5)] }),
  ];
  const placement = create(PlacementSchema, {
    model: "m.gguf",
    totalLayers: 5,
    epoch: 7n,
    stages: replicas[0].stages,
    replicas,
  });
  let s = reduce(initialState("x"), { type: "connected", at: 1 });
  for (const [i, st] of replicas.flatMap((r) => r.stages).entries()) {
    s = reduce(s, {
      type: "update",
      msg: create(StreamUpdatesResponseSchema, {
        sequence: BigInt(10 + i),
        timestampUnixMs: 1n,
        event: {
          case: "membership",
          value: create(MembershipEventSchema, {
            node: create(NodeInfoSchema, {
              id: st.nodeId,
              state: NodeState.ALIVE,
              hosted: create(LayerRangeSchema, {
                model: "m.gguf",
                fromLayer: st.fromLayer,
                toLayer: st.toLayer,
              }),
            }),
          }),
        },
      }),
    });
  }
  s = reduce(s, {
    type: "update",
    msg: create(StreamUpdatesResponseSchema, {
      sequence: 1n,
      timestampUnixMs: 1n,
      event: {
        case: "placement",
        value: create(PlacementEventSchema, { placement, reason: "start-up" }),
      },
    }),
  });
  const text = render(s, { width: 80, height: 24, now: 0, glitch: "off" }).screen.lines().join(
    "\n",
  );
  assert(text.includes("replica a: a[0,3) ━▶ b[3,5) ━▶ sample"), text);
  assert(text.includes("replica c: c[0,3) ━▶ d[3,5) ━▶ sample"), text);
  // One replica reads as before.
  s = reduce(s, {
    type: "update",
    msg: create(StreamUpdatesResponseSchema, {
      sequence: 2n,
      timestampUnixMs: 2n,
      event: {
        case: "placement",
        value: create(PlacementEventSchema, {
          placement: create(PlacementSchema, { ...placement, replicas: replicas.slice(0, 1) }),
          reason: "node c dead",
        }),
      },
    }),
  });
  const one = render(s, { width: 80, height: 24, now: 0, glitch: "off" }).screen.lines().join("\n");
  assert(one.includes("pipeline: a[0,3) ━▶ b[3,5) ━▶ sample"), one);
});
