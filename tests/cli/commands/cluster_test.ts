// `cluster status` on an agent that places nothing: what the others serve, truthfully (hunt 4,
// F2: it named the responder's own range, ranges of two models as one model, and half a model as
// served).
import { create } from "@bufbuild/protobuf";
import { servedElsewhere } from "../../../cli/commands/cluster.ts";
import { LayerRangeSchema, type NodeInfo, NodeInfoSchema, NodeState } from "../../../proto/mod.ts";
import { assertEquals } from "../../support/assert.ts";

function node(id: string, model: string, from: number, to: number, total = 0): NodeInfo {
  return create(NodeInfoSchema, {
    id,
    state: NodeState.ALIVE,
    hosted: create(LayerRangeSchema, { model, fromLayer: from, toLayer: to, totalLayers: total }),
  });
}
const bare = (id: string) => create(NodeInfoSchema, { id, state: NodeState.ALIVE });

Deno.test("servedElsewhere: a whole model held by others is served; the responder's own range is not", () => {
  const whole = servedElsewhere([bare("z"), node("a", "m", 0, 7), node("b", "m", 7, 12)], "z");
  assertEquals(whole, {
    model: "m",
    whole: true,
    stages: [{ node: "a", from: 0, to: 7 }, { node: "b", from: 7, to: 12 }],
  });
  // The responder holds layers itself: its placement error says what is missing.
  assertEquals(servedElsewhere([node("a", "m", 0, 7, 12), node("b", "m", 7, 12)], "a"), null);
  assertEquals(servedElsewhere([bare("z")], "z"), null);
});

Deno.test("servedElsewhere: half a model is not served; two models are not one", () => {
  const half = servedElsewhere([bare("z"), node("a", "m", 0, 7, 12)], "z");
  assertEquals([half?.whole, half?.stages], [false, [{ node: "a", from: 0, to: 7 }]]);
  const gap = servedElsewhere([bare("z"), node("a", "m", 0, 4), node("b", "m", 7, 12)], "z");
  assertEquals(gap?.whole, false);
  const two = servedElsewhere(
    [bare("z"), node("a", "big", 0, 7, 12), node("b", "small", 0, 5, 5)],
    "z",
  );
  assertEquals(two, { model: "small", whole: true, stages: [{ node: "b", from: 0, to: 5 }] });
});
