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

/** The plan, or undefined where no pipeline fits (which must be a PlacementError). */
function planOrNone(nodes: readonly ReplicaNode[], count: "auto" | 1): ReplicaPlan | undefined {
  try {
    return planReplicas(model, nodes, count);
  } catch (e) {
    assert(e instanceof PlacementError);
    return undefined;
  }
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
        const plan = planOrNone(all, "auto");
        if (!plan) return;
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

Deno.test("replicas: a standby replacing a lost stage takes exactly its layers, whatever its id", () => {
  const budget = stageBytes(model, 0, 4) + 10; // any two nodes hold the model, three spread it
  const three = nodes(3, budget);
  const before = planReplicas(model, three, 1);
  assertEquals(before.replicas[0].stages.length, 3);
  const lost = before.replicas[0].stages[1]; // the middle stage's node dies
  for (const id of ["a0", "n15", "zz"]) { // sorts first, in the middle, last
    const live = [
      ...hostingOf(before, three).filter((n) => n.id !== lost.nodeId),
      { id, memoryBudget: budget, speed: 3 }, // faster too: a fresh plan would re-spread
    ];
    const after = planReplicas(model, live, 1);
    checkPlan(after, live);
    const stages = after.replicas[0].stages;
    assertEquals(
      stages.map((s) => `${s.from}-${s.to}`),
      before.replicas[0].stages.map((s) => `${s.from}-${s.to}`),
      `standby ${id}: ${shape(after)}`,
    );
    assertEquals(stages[1].nodeId, id);
    assertEquals(after.standby, []);
  }
});

Deno.test("replicas: a join to a whole pipeline, or a loss no spare covers, still re-plans", () => {
  const budget = stageBytes(model, 0, 4) + 10;
  const two = nodes(2, budget);
  const before = planReplicas(model, two, 1);
  // a third node joins the whole 2-stage pipeline: one pipeline over all three, as before
  const joined = [...hostingOf(before, two), { id: "n2", memoryBudget: budget, speed: 1 }];
  assertEquals(planReplicas(model, joined, 1).replicas[0].stages.length, 3);
  // a stage of a 3-stage pipeline is lost and nobody spare: the two left re-spread the layers
  const three = nodes(3, budget);
  const hosted = hostingOf(planReplicas(model, three, 1), three);
  const left = hosted.filter((n) => n.id !== "n1");
  const after = planReplicas(model, left, 1);
  checkPlan(after, left);
  assertEquals(after.replicas[0].stages.map((s) => s.nodeId), ["n0", "n2"]);
  // a lost head: the standby becomes the first stage, the others stay
  const headless = [...hosted.filter((n) => n.id !== "n0"), {
    id: "s",
    memoryBudget: budget,
    speed: 1,
  }];
  const fixed = planReplicas(model, headless, 1);
  checkPlan(fixed, headless);
  assertEquals(fixed.replicas[0].stages[0].nodeId, "s");
  assertEquals(
    shape(fixed)[0].split(" ").slice(1),
    shape(planReplicas(model, three, 1))[0].split(" ").slice(1),
  );
});

Deno.test("replicas: a replica that lost a stage is repaired from a standby, the others untouched", () => {
  const budget = stageBytes(model, 0, 4) + 10; // two nodes per pipeline
  const four = nodes(4, budget);
  const before = planReplicas(model, four, "auto");
  assertEquals(before.replicas.length, 2);
  const victim = before.replicas[0].stages[0].nodeId; // its head: the spare sorts after the orphan
  const live = [
    ...hostingOf(before, four).filter((n) => n.id !== victim),
    { id: "s", memoryBudget: budget, speed: 1 },
  ];
  const after = planReplicas(model, live, "auto");
  checkPlan(after, live);
  assertEquals(after.replicas.length, 2);
  const want = shape(before).map((s) => s.replace(`${victim}:`, "s:"));
  assertEquals([...shape(after)].sort(), [...want].sort());
});

Deno.test("replicas: a plan being loaded stays the plan while its nodes announce their ranges", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          budget: fc.integer({ min: 300, max: 1200 }),
          speed: fc.integer({ min: 1, max: 9 }),
        }),
        {
          minLength: 2,
          maxLength: 6,
        },
      ),
      fc.array(fc.boolean(), { minLength: 6, maxLength: 6 }),
      (spec, announced) => {
        const all = spec.map((x, i) => ({ id: `n${i}`, memoryBudget: x.budget, speed: x.speed }));
        const plan = planOrNone(all, 1);
        if (!plan) return;
        // Some of the planned nodes have loaded and announced their ranges, the others not yet.
        const hosted = hostingOf(plan, all).map((n, i) =>
          announced[i] ? n : { ...n, hosting: undefined }
        );
        assertEquals(shape(planReplicas(model, hosted, 1)), shape(plan));
      },
    ),
  );
});

Deno.test("replicas: several pipelines being loaded stay the plan while their nodes announce", () => {
  fc.assert(
    fc.property(
      fc.array(fc.constantFrom(350, 500, 700, 1100), { minLength: 3, maxLength: 8 }),
      fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }),
      (budgets, announced) => {
        const all = budgets.map((b, i) => ({ id: `n${i}`, memoryBudget: b, speed: 1 }));
        const plan = planOrNone(all, "auto");
        if (!plan) return;
        // Before, a partly announced pipeline was "repaired" from nodes still loading (of
        // another replica, or planned elsewhere): the first announcements moved the others.
        const hosted = hostingOf(plan, all).map((n, i) =>
          announced[i] ? n : { ...n, hosting: undefined }
        );
        assertEquals(shape(planReplicas(model, hosted, "auto")), shape(plan));
      },
    ),
  );
});

Deno.test("replicas: a node joining, however large, moves no standing pipeline unless it adds one", () => {
  // 12 layers of one byte: five-byte nodes make three-stage pipelines.
  const m: ModelFootprint = {
    nLayers: 12,
    layerBytes: new Array(12).fill(1),
    headBytes: 0,
    tailBytes: 0,
    kvBytesPerLayer: 0,
  };
  const at = (plan: ReplicaPlan, budgets: Record<string, number>): ReplicaNode[] => {
    const hosting = new Map<string, { from: number; to: number; head: string }>();
    for (const r of plan.replicas) {
      for (const s of r.stages) {
        hosting.set(s.nodeId, { from: s.from, to: s.to, head: r.stages[0].nodeId });
      }
    }
    return Object.entries(budgets).map(([id, memoryBudget]) => ({
      id,
      memoryBudget,
      speed: 1,
      ...(hosting.has(id) ? { hosting: hosting.get(id) } : {}),
    }));
  };
  const budgets: Record<string, number> = { a: 5, b: 5, c: 5, d: 5, e: 5, f: 5, g: 5 };
  let plan = planReplicas(m, at({ replicas: [], standby: [] }, budgets), "auto");
  plan = planReplicas(m, at(plan, budgets), "auto");
  assertEquals(shape(plan), ["a:0-4 b:4-8 c:8-12", "d:0-4 e:4-8 f:8-12"]);
  delete budgets.b;
  plan = planReplicas(m, at(plan, budgets), "auto");
  assertEquals(shape(plan), ["a:0-4 g:4-8 c:8-12", "d:0-4 e:4-8 f:8-12"], "g takes b's layers");
  const standing = shape(plan);
  // A larger node joins: it adds no replica, so nothing moves (before, it lowered the shortest
  // pipeline the budgets allow and every three-stage pipeline was regrouped).
  const bigger = planReplicas(m, at(plan, { ...budgets, h: 8 }), "auto");
  assertEquals(shape(bigger), standing);
  assertEquals(bigger.standby, ["h"]);
  // One that holds the whole model is a replica of its own; the others stay.
  const whole = planReplicas(m, at(plan, { ...budgets, h: 12 }), "auto");
  assertEquals(shape(whole), [...standing, "h:0-12"]);
  // Then a loss is a repair, whatever the lengths (before, a one-node pipeline made every
  // longer one "too long" to keep, and any loss regrouped them all).
  const loaded = at(whole, { ...budgets, h: 12, i: 5 });
  const lost = planReplicas(m, loaded.filter((n) => n.id !== "e"), "auto");
  assertEquals(shape(lost), ["a:0-4 g:4-8 c:8-12", "d:0-4 i:4-8 f:8-12", "h:0-12"]);
});
