// Lifeguard math: suspicion timeout bounds and the shrinking timer; local health awareness.
import { assert, assertEquals } from "../../support/assert.ts";
import { SimClock, suspicionTimeout, suspicionTotal } from "../../../cluster/gossip/mod.ts";
import { Suspicion } from "../../../cluster/gossip/suspicion.ts";
import { Awareness } from "../../../cluster/gossip/awareness.ts";

Deno.test("suspicion: min timeout = mult × max(1, log10 N) × probeInterval", () => {
  assertEquals(suspicionTimeout(4, 1, 1000), 4000); // log10(1) = 0 → floor of 1
  assertEquals(suspicionTimeout(4, 10, 1000), 4000);
  assertEquals(suspicionTimeout(4, 100, 1000), 8000);
  assertEquals(suspicionTimeout(3, 1000, 500), 4500);
  assertEquals(suspicionTimeout(3, 0, 500), 1500);
});

Deno.test("suspicion: total shrinks on a log scale from max to min with confirmations", () => {
  const min = 2000, max = 12000, k = 3;
  assertEquals(suspicionTotal(0, k, min, max), max);
  const t1 = suspicionTotal(1, k, min, max), t2 = suspicionTotal(2, k, min, max);
  assertEquals(t1, Math.floor(max - (Math.log(2) / Math.log(4)) * (max - min))); // 7000
  assert(max > t1 && t1 > t2 && t2 > min, `${t1} ${t2}`);
  assertEquals(suspicionTotal(3, k, min, max), min);
  assertEquals(suspicionTotal(10, k, min, max), min); // never below min
  assertEquals(suspicionTotal(0, 0, min, max), min); // no confirmations expected → min
});

async function runUntil(clock: SimClock, t: number) {
  while (clock.step(t));
  clock.advanceTo(t);
  await Promise.resolve();
}

Deno.test("suspicion: timer starts at max, confirmations pull it in, duplicates do not", async () => {
  const clock = new SimClock();
  let firedAt = -1, confs = -1;
  const s = new Suspicion("a", 2, 1000, 6000, clock, (c) => {
    firedAt = clock.now();
    confs = c;
  });
  await runUntil(clock, 500);
  assert(s.confirm("b"), "first confirmation counts");
  assert(!s.confirm("b"), "the same confirmer counts once");
  assert(!s.confirm("a"), "the accuser is not a confirmation");
  // total after 1 of 2: 6000 − log(2)/log(3) × 5000 ≈ 2845 ms from the start
  assertEquals(s.totalMs, Math.floor(6000 - (Math.log(2) / Math.log(3)) * 5000));
  await runUntil(clock, 1200);
  assert(s.confirm("c"));
  assert(!s.confirm("d"), "beyond k nothing changes");
  assertEquals(s.totalMs, 1000);
  // min already passed at 1200 → fires at once
  await runUntil(clock, 1201);
  assertEquals(firedAt, 1200);
  assertEquals(confs, 2);
});

Deno.test("suspicion: with no confirmations the timer fires at max; stop cancels", async () => {
  const clock = new SimClock();
  let fired = 0;
  new Suspicion("a", 2, 1000, 6000, clock, () => fired++);
  const stopped = new Suspicion("a", 2, 1000, 6000, clock, () => fired += 100);
  stopped.stop();
  await runUntil(clock, 5999);
  assertEquals(fired, 0);
  await runUntil(clock, 6000);
  assertEquals(fired, 1);
});

Deno.test("awareness: score clamps to [0, max) and scales timeouts", () => {
  const a = new Awareness(8);
  assertEquals(a.scaleTimeout(500), 500);
  a.applyDelta(3);
  assertEquals(a.scaleTimeout(500), 2000);
  a.applyDelta(100);
  assertEquals(a.healthScore, 7);
  a.applyDelta(-100);
  assertEquals(a.healthScore, 0);
});
