import fc from "fast-check";
import {
  type ModelFootprint,
  parseReplicaCount,
  PlacementError,
  planReplicas,
  type ReplicaNode,
  type ReplicaPlan,
  stageBytes,
} from "../../../cluster/placement/mod.ts";
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";

// 8 layers of 100 bytes + 10 KV each, head 50, tail 60: the whole model is 1030 bytes.
const model: ModelFootprint = {
  nLayers: 8,
  layerBytes: new Array(8).fill(100),
  headBytes: 50,
  tailBytes: 60,
  kvBytesPerLayer: 10,
};
const WHOLE = stageBytes(model, 0, 8);

const nodes = (n: number, budget: number, prefix = "n"): ReplicaNode[] =>
  Array.from({ length: n }, (_, i) => ({ id: `${prefix}${i}`, memoryBudget: budget, speed: 1 }));

/** Replicas hold every layer once each, on disjoint nodes, within budgets. */
function checkPlan(plan: ReplicaPlan, all: readonly ReplicaNode[]): void {
  const seen = new Set<string>();
  for (const r of plan.replicas) {
    assertEquals(r.stages[0].from, 0);
    assertEquals(r.stages[r.stages.length - 1].to, model.nLayers);
    for (let i = 0; i < r.stages.length; i++) {
      const s = r.stages[i];
      if (i > 0) assertEquals(s.from, r.stages[i - 1].to);
      assert(!seen.has(s.nodeId), `${s.nodeId} is in two replicas`);
      seen.add(s.nodeId);
      const n = all.find((x) => x.id === s.nodeId)!;
      assert(stageBytes(model, s.from, s.to) <= n.memoryBudget, `${s.nodeId} over budget`);
    }
  }
  for (const id of plan.standby) assert(!seen.has(id), `${id} is standby and in a replica`);
  assertEquals(seen.size + plan.standby.length, all.length, "every live node is placed once");
}

/** The plan with each node told what it hosts now (as gossip would say after applying it). */
function hostingOf(plan: ReplicaPlan, all: readonly ReplicaNode[]): ReplicaNode[] {
  const at = new Map<string, { from: number; to: number; head: string }>();
  for (const r of plan.replicas) {
    for (const s of r.stages) {
      at.set(s.nodeId, { from: s.from, to: s.to, head: r.stages[0].nodeId });
    }
  }
  return all.map((n) => (at.has(n.id) ? { ...n, hosting: at.get(n.id) } : { ...n }));
}

const shape = (plan: ReplicaPlan) =>
  plan.replicas.map((r) => r.stages.map((s) => `${s.nodeId}:${s.from}-${s.to}`).join(" "));

Deno.test("replicas: auto makes as many whole pipelines as the budgets hold", () => {
  const four = nodes(4, WHOLE);
  const p = planReplicas(model, four, "auto");
  checkPlan(p, four);
  assertEquals(p.replicas.length, 4, "each node holds the model: 4 one-stage pipelines");
  // half a model each: pipelines of 2
  const half = nodes(5, stageBytes(model, 0, 4) + 10);
  const q = planReplicas(model, half, "auto");
  checkPlan(q, half);
  assertEquals(q.replicas.length, 2);
  assert(q.replicas.every((r) => r.stages.length === 2), "each pipeline as short as possible");
  assertEquals(q.standby.length, 1, "the fifth node waits as a standby");
});

Deno.test("replicas: a fixed count caps them; 1 is one pipeline over every node, as before", () => {
  const four = nodes(4, WHOLE);
  const two = planReplicas(model, four, 2);
  checkPlan(two, four);
  assertEquals(two.replicas.length, 2);
  assertEquals(two.standby.length, 2);
  const one = planReplicas(model, four, 1);
  checkPlan(one, four);
  assertEquals(one.replicas.length, 1);
  assertEquals(one.replicas[0].stages.length, 4, "replicas 1 spreads the layers over all nodes");
});

Deno.test("replicas: the plan depends on the set of nodes, not on their order", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 300, max: 2500 }), { minLength: 1, maxLength: 9 }),
      fc.integer(),
      (budgets, seed) => {
        const all = budgets.map((b, i) => ({ id: `n${i}`, memoryBudget: b, speed: 1 }));
        let plan: ReplicaPlan;
        try {
          plan = planReplicas(model, all, "auto");
        } catch (e) {
          assert(e instanceof PlacementError);
          return;
        }
        checkPlan(plan, all);
        const shuffled = [...all].sort((a, b) =>
          ((a.id.charCodeAt(1) * 7919 + seed) % 13) - ((b.id.charCodeAt(1) * 7919 + seed) % 13)
        );
        assertEquals(shape(planReplicas(model, shuffled, "auto")), shape(plan));
      },
    ),
  );
});

Deno.test("replicas: a node joining or leaving leaves the other pipelines where they are", () => {
  const budget = stageBytes(model, 0, 4) + 10; // two nodes per pipeline
  const six = nodes(6, budget);
  const before = planReplicas(model, six, "auto");
  assertEquals(before.replicas.length, 3);
  // n1 leaves: the replicas without it keep their nodes and layers
  const left = hostingOf(before, six).filter((n) => n.id !== "n1");
  const after = planReplicas(model, left, "auto");
  checkPlan(after, left);
  const untouched = shape(before).filter((s) => !s.includes("n1:"));
  for (const s of untouched) assert(shape(after).includes(s), `${s} moved: ${shape(after)}`);
  assertEquals(after.replicas.length, 2, "the orphan waits as a standby");
  // a node joins: with the orphan it forms a third pipeline; the two others stay
  const joined = [...hostingOf(after, left), { id: "n9", memoryBudget: budget, speed: 1 }];
  const again = planReplicas(model, joined, "auto");
  checkPlan(again, joined);
  assertEquals(again.replicas.length, 3);
  for (const s of shape(after)) assert(shape(again).includes(s), `${s} moved on a join`);
});

Deno.test("replicas: a kept chain longer than need be is regrouped", () => {
  const four = nodes(4, WHOLE);
  const one = planReplicas(model, four, 1); // one pipeline over the four nodes
  const auto = planReplicas(model, hostingOf(one, four), "auto");
  assertEquals(auto.replicas.length, 4, "switching to auto regroups the long chain");
});

Deno.test("replicas: no pipeline fits → the placement error says what is missing", () => {
  assertThrows(() => planReplicas(model, nodes(2, 300), "auto"), PlacementError, "cannot hold");
  assertThrows(() => parseReplicaCount("0"), Error, "positive integer");
  assertEquals(parseReplicaCount("auto"), "auto");
  assertEquals(parseReplicaCount("3"), 3);
});
