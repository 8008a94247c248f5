/** `deno task test`'s reading of the runner's end: only an abort after a clean summary passes. */
import { suitePassed } from "./suite_status.ts";
import { assertEquals } from "./assert.ts";

const ok = "\x1b[0m\x1b[32mok\x1b[0m | 1107 passed (29 steps) | 0 failed | 60 ignored (6m20s)\n";
const failed = "\x1b[31mFAILED\x1b[0m | 1106 passed | 1 failed | 60 ignored (6m3s)\n";
const abort = { success: false, code: 134, signal: null };

Deno.test("the suite passes on exit 0, or on an abort after a summary with nothing failed", () => {
  assertEquals(suitePassed(ok, { success: true, code: 0, signal: null }).passed, true);
  assertEquals(suitePassed(ok, abort), { passed: true, abortedAfterSummary: true });
  assertEquals(suitePassed(ok, { success: false, code: 1, signal: "SIGABRT" }).passed, true);
});

Deno.test("a failure, an abort before the summary, or another exit code fails the suite", () => {
  assertEquals(suitePassed(failed, abort).passed, false);
  assertEquals(suitePassed("running 3 tests from ./a_test.ts\n", abort).passed, false);
  assertEquals(suitePassed(ok, { success: false, code: 1, signal: null }).passed, false);
  assertEquals(suitePassed(ok + failed, abort).passed, false);
});
