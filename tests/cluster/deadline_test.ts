/** cluster/deadline.ts: bounded waits leave no timer behind and report the right outcome. */
import { orTimeout, settleWithin } from "../../cluster/deadline.ts";
import { assert, assertEquals } from "../support/assert.ts";

Deno.test("settleWithin: returns when the promise settles, either way, or when time is up", async () => {
  await settleWithin(Promise.resolve(1), 10_000);
  await settleWithin(Promise.reject(new Error("no")), 10_000);
  await settleWithin(undefined, 10_000);
  const t = performance.now();
  await settleWithin(new Promise(() => {}), 50);
  assert(performance.now() - t >= 40, "waited for the bound");
});

Deno.test("orTimeout: the promise's value or error, else the late error", async () => {
  assertEquals(await orTimeout(Promise.resolve(7), 10_000, () => new Error("late")), 7);
  const failed = await orTimeout(Promise.reject(new Error("own")), 10_000, () => new Error("late"))
    .then(() => null, (e) => e.message);
  assertEquals(failed, "own");
  const late = await orTimeout(new Promise(() => {}), 20, () => new Error("late"))
    .then(() => null, (e) => e.message);
  assertEquals(late, "late");
});
