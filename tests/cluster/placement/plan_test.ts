import fc from "fast-check";
import {
  type ModelFootprint,
  PlacementError,
  planPlacement,
  stageBytes,
  stageWorkBytes,
} from "../../../cluster/placement/mod.ts";
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";

const model = (nLayers: number, layer = 100, head = 50, tail = 60, kv = 10): ModelFootprint => ({
  nLayers,
  layerBytes: new Array(nLayers).fill(layer),
  headBytes: head,
  tailBytes: tail,
  kvBytesPerLayer: kv,
});

function checkContiguous(nLayers: number, stages: readonly { from: number; to: number }[]) {
  assertEquals(stages[0].from, 0);
  assertEquals(stages[stages.length - 1].to, nLayers);
  for (let i = 1; i < stages.length; i++) assertEquals(stages[i].from, stages[i - 1].to);
  for (const s of stages) assert(s.to > s.from, "every stage holds at least one layer");
}

/** Exhaustive check: can nodes (in order, any may be skipped) cover all layers within budget? */
function feasible(m: ModelFootprint, budgets: number[]): boolean {
  const memo = new Map<string, boolean>();
  const go = (i: number, l: number): boolean => {
    if (l === m.nLayers) return true;
    if (i === budgets.length) return false;
    const key = `${i},${l}`;
    if (memo.has(key)) return memo.get(key)!;
    let ok = go(i + 1, l);
    for (let to = l + 1; !ok && to <= m.nLayers && stageBytes(m, l, to) <= budgets[i]; to++) {
      ok = go(i + 1, to);
    }
    memo.set(key, ok);
    return ok;
  };
  return go(0, 0);
}

Deno.test("one roomy node takes the whole model", () => {
  const p = planPlacement(model(5), [{ id: "a", memoryBudget: 1e9, speed: 1 }]);
  assertEquals(p.stages, [{ nodeId: "a", from: 0, to: 5, bytes: 5 * 110 + 50 + 60 }]);
});

Deno.test("equal nodes split layers evenly, in id order", () => {
  const nodes = ["c", "a", "b"].map((id) => ({ id, memoryBudget: 1e9, speed: 1 }));
  const p = planPlacement(model(12), nodes);
  assertEquals(p.stages.map((s) => [s.nodeId, s.from, s.to]), [["a", 0, 4], ["b", 4, 8], [
    "c",
    8,
    12,
  ]]);
});

Deno.test("a faster node gets more layers", () => {
  const p = planPlacement(model(12), [
    { id: "a", memoryBudget: 1e9, speed: 3 },
    { id: "b", memoryBudget: 1e9, speed: 1 },
  ]);
  assertEquals(p.stages.map((s) => s.to - s.from), [9, 3]);
});

Deno.test("the tail's output matrix counts as work: equal nodes give the tail fewer layers", () => {
  // An 8B model's shape in miniature: 32 layers of 123 units, an output matrix of 295, a token
  // embedding of the same size that is only looked up.
  const m = model(32, 123, 295, 295, 0);
  const nodes = ["a", "b", "c"].map((id) => ({ id, memoryBudget: 1e9, speed: 1 }));
  const p = planPlacement(m, nodes);
  assertEquals(p.stages.map((s) => s.to - s.from), [11, 12, 9]);
  const work = p.stages.map((s) => stageWorkBytes(m, s.from, s.to));
  assertEquals(work, [11 * 123, 12 * 123, 9 * 123 + 295]);
  // Each stage's time per token is within one layer of an even third.
  for (const w of work) assert(Math.abs(w - (32 * 123 + 295) / 3) <= 123, `${work}`);
});

Deno.test("budgets too small for any single node force a split", () => {
  const m = model(6); // 6×110 + 110 = 770 bytes in all
  const p = planPlacement(m, [
    { id: "a", memoryBudget: 400, speed: 10 },
    { id: "b", memoryBudget: 400, speed: 1 },
  ]);
  checkContiguous(6, p.stages);
  for (const s of p.stages) assert(s.bytes <= 400, `stage ${s.nodeId} holds ${s.bytes}`);
});

Deno.test("a small node whose id sorts first does not make a model that fits unplaceable", () => {
  // 4 layers of 1 byte, the embeddings 10: in id order a (5 bytes) would have to be the head.
  const m = model(4, 1, 10, 0, 0);
  const p = planPlacement(m, [
    { id: "a", memoryBudget: 5, speed: 1 },
    { id: "z", memoryBudget: 12, speed: 1 },
  ]);
  checkContiguous(4, p.stages);
  assertEquals(p.stages[0].nodeId, "z");
  for (const s of p.stages) assert(s.bytes <= (s.nodeId === "a" ? 5 : 12), `${s.nodeId} over`);
  // Id order is kept where it works: the same nodes renamed plan as before.
  assertEquals(
    planPlacement(m, [{ id: "a", memoryBudget: 12, speed: 1 }, {
      id: "b",
      memoryBudget: 5,
      speed: 1,
    }]).stages.map((s) => s.nodeId),
    ["a", "b"],
  );
});

Deno.test("a cluster too small gets a clear error with the numbers", () => {
  const e = assertThrows(
    () =>
      planPlacement(model(6), [
        { id: "a", memoryBudget: 300, speed: 1 },
        { id: "b", memoryBudget: 300, speed: 1 },
      ]),
    PlacementError,
    "cannot hold the model",
  );
  assert(e.message.includes("770 B") && e.message.includes("600 B"), e.message);
  assertThrows(() => planPlacement(model(2), []), PlacementError, "no node");
});

Deno.test("property: any feasible plan is contiguous, covers every layer and respects budgets", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 40 }),
      fc.array(
        fc.record({
          budget: fc.integer({ min: 0, max: 3000 }),
          speed: fc.integer({ min: 1, max: 9 }),
        }),
        { minLength: 1, maxLength: 8 },
      ),
      (nLayers, specs) => {
        const m = model(nLayers);
        const nodes = specs.map((s, i) => ({
          id: `n${i}`,
          memoryBudget: s.budget,
          speed: s.speed,
        }));
        try {
          const p = planPlacement(m, nodes);
          checkContiguous(nLayers, p.stages);
          for (const s of p.stages) {
            const node = nodes.find((n) => n.id === s.nodeId)!;
            assertEquals(s.bytes, stageBytes(m, s.from, s.to));
            assert(s.bytes <= node.memoryBudget, "budget respected");
          }
          assertEquals(new Set(p.stages.map((s) => s.nodeId)).size, p.stages.length);
        } catch (e) {
          if (!(e instanceof PlacementError)) throw e;
          // Refusing is right only when no contiguous assignment exists at all.
          assert(
            !feasible(m, nodes.map((n) => n.memoryBudget)),
            `refused a feasible case: ${e.message}`,
          );
        }
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("tied embeddings are counted once when one node holds both ends", () => {
  const m = { ...model(2, 100, 500, 510), sharedHeadTailBytes: 500 };
  assertEquals(stageBytes(m, 0, 2), 2 * 110 + 500 + 510 - 500);
  assertEquals(stageBytes(m, 0, 1), 110 + 500);
  assertEquals(stageBytes(m, 1, 2), 110 + 510);
});
