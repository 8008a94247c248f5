/** The transfer's permits: a caller that gives up while it waits leaves the line. */
import { Semaphore } from "../../../cluster/transfer/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

Deno.test("Semaphore: an aborted wait leaves the line and the permit goes to the next caller", async () => {
  const sem = new Semaphore(1);
  const held = await sem.acquire();
  const gone = new AbortController();
  const ghost = sem.acquire(gone.signal).then(() => "granted", (e) => `refused: ${e.message}`);
  const next = sem.acquire();
  gone.abort(new Error("the fetcher gave up"));
  assertEquals(await ghost, "refused: the fetcher gave up");
  held();
  // The permit skips the gone caller (before, it went to the ghost and was never given back).
  const release = await next;
  release();
  const again = await Promise.race([
    sem.acquire().then((r) => (r(), "free")),
    new Promise((r) => setTimeout(() => r("stuck"), 500)),
  ]);
  assertEquals(again, "free");
  let threw = false;
  try {
    await sem.acquire(gone.signal);
  } catch {
    threw = true;
  }
  assert(threw, "an already aborted caller gets no permit");
});
