/** Tiling a chain from gossiped stages, and the gap named when none tiles the model. */
import {
  describeGap,
  GossipChainProvider,
  NoPlacementError,
  type StageCandidate,
  stageKey,
  tileChain,
} from "../../../cluster/pipeline/mod.ts";
import { assertEquals } from "../../support/assert.ts";

const stage = (id: string, from: number, to: number): StageCandidate => ({
  id,
  status: "alive",
  model: "m",
  from,
  to,
});

Deno.test("a missing range is named up to the next stage's start, not to the last layer", () => {
  const gapOf = (stages: StageCandidate[]) => {
    const t = tileChain(stages, "m", 12, new Set());
    return Array.isArray(t) ? "tiled" : describeGap(t, "is missing", "are missing");
  };
  // The tester's case: a holds [0,5), d [10,12); b ([5,10)) was gone. Before: "layers 5..11".
  assertEquals(gapOf([stage("a", 0, 5), stage("d", 10, 12)]), "layers 5..9 are missing");
  assertEquals(gapOf([stage("a", 0, 5), stage("d", 6, 12)]), "layer 5 is missing");
  assertEquals(gapOf([stage("a", 0, 5)]), "layers 5..11 are missing");
  // Layer 5 is held, inside [3, 12): the ranges do not meet, nothing is missing.
  assertEquals(
    gapOf([stage("a", 0, 5), stage("c", 3, 12)]),
    "the stages' layer ranges do not meet at layer 5 (a plan in transition)",
  );
  assertEquals(gapOf([stage("a", 0, 5), stage("b", 5, 12)]), "tiled");
});

Deno.test("a gap held only by stages that failed under the request, alive in gossip, is named so", async () => {
  // Hunt 4: a link broken between two agents got "layer 4 has no live agent" although all three
  // were alive; the cluster's size was blamed for a network fault.
  const candidates = [stage("a", 0, 2), { ...stage("c", 2, 5), version: 7 }];
  const provider = new GossipChainProvider({
    model: "m",
    nLayers: 5,
    candidates: () => candidates,
    link: () => {
      throw new Error("no chain expected");
    },
  });
  const message = (exclude: Set<string>) =>
    provider.chain({ exclude, timeoutMs: 0 }).then(() => "chained", (e) => {
      assertEquals(e instanceof NoPlacementError, true);
      return (e as Error).message;
    });
  assertEquals(
    await message(new Set([stageKey("c", 7)])),
    "no placement for m: layers 2..4 are held only by c, which failed under this request " +
      "although gossip still sees it alive (a network fault between agents?)",
  );
  candidates[1] = { ...candidates[1], status: "suspect" };
  assertEquals(
    await message(new Set([stageKey("c", 7)])),
    "no placement for m: layers 2..4 have no live agent (start more agents, or raise --memory-budget)",
  );
});
