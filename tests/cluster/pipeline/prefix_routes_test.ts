/** The head's record of where prompt prefixes went (cluster/pipeline/prefix_routes.ts). */
import { PrefixRoutes } from "../../../cluster/pipeline/mod.ts";
import { PREFIX_CACHE_BLOCK_TOKENS } from "../../../model/prefix_cache.ts";
import { assert, assertEquals } from "../../support/assert.ts";

const B = PREFIX_CACHE_BLOCK_TOKENS;
const ids = (n: number, seed = 1) => Array.from({ length: n }, (_, i) => (i * 7919 + seed) % 32000);

Deno.test("prefix routes: the longest recorded block prefix wins; a partial block counts for nothing", () => {
  const routes = new PrefixRoutes();
  assertEquals(routes.lookup(routes.keys(ids(100))), undefined);
  routes.record(routes.keys(ids(B - 1)), "short");
  assertEquals(routes.size, 0, "less than a block: nothing a stage could have cached");
  routes.record(routes.keys(ids(2 * B + 5)), "a");
  assertEquals(routes.size, 2);
  // A later turn: the same history and more.
  assertEquals(routes.lookup(routes.keys(ids(5 * B))), { replica: "a", tokens: 2 * B });
  assertEquals(routes.lookup(routes.keys(ids(B))), { replica: "a", tokens: B });
  // Another prompt sharing the first block only: that block's replica is the hint.
  const forked = [...ids(B), ...ids(3 * B, 99)];
  routes.record(routes.keys(forked), "b");
  assertEquals(routes.lookup(routes.keys(ids(5 * B))), { replica: "a", tokens: 2 * B });
  assertEquals(routes.lookup(routes.keys(forked)), { replica: "b", tokens: 4 * B });
  assertEquals(
    routes.lookup(routes.keys(ids(B))),
    { replica: "b", tokens: B },
    "the latest to send it",
  );
  // A change inside the first block changes every key after it.
  const changed = ids(4 * B);
  changed[3]++;
  assertEquals(routes.lookup(routes.keys(changed)), undefined);
});

Deno.test("prefix routes: bounded, least recently recorded forgotten first", () => {
  const routes = new PrefixRoutes(4);
  routes.record(routes.keys(ids(2 * B, 1)), "a");
  routes.record(routes.keys(ids(2 * B, 2)), "b");
  assertEquals(routes.size, 4);
  routes.record(routes.keys(ids(B, 1)), "a"); // its first block used again: now the newest
  routes.record(routes.keys(ids(B, 3)), "c");
  assertEquals(routes.size, 4);
  // a's second block was the oldest: a's prompt now matches one block, b's both.
  assertEquals(routes.lookup(routes.keys(ids(2 * B, 1))), { replica: "a", tokens: B });
  assertEquals(routes.lookup(routes.keys(ids(2 * B, 2))), { replica: "b", tokens: 2 * B });
  routes.record(routes.keys(ids(B, 4)), "d");
  routes.record(routes.keys(ids(B, 5)), "e");
  assertEquals(
    routes.lookup(routes.keys(ids(2 * B, 2))),
    undefined,
    "then b's two, the next oldest",
  );
  assertEquals(routes.lookup(routes.keys(ids(B, 3)))?.replica, "c");
});

Deno.test("prefix routes: keys are exact integers that tell token order and values apart", () => {
  const routes = new PrefixRoutes();
  const seen = new Set<number>();
  for (let s = 0; s < 2000; s++) {
    for (const k of routes.keys(ids(B, s))) {
      assert(Number.isSafeInteger(k) && k >= 0, String(k));
      seen.add(k);
    }
  }
  assertEquals(seen.size, 2000);
  const a = ids(B);
  const swapped = [...a];
  [swapped[0], swapped[1]] = [swapped[1], swapped[0]];
  assert(routes.keys(a)[0] !== routes.keys(swapped)[0]);
});
