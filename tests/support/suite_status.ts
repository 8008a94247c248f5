/** How `deno task test` (tests/suite.ts) reads the test runner's end. */

/**
 * Whether the runner's exit counts as a pass: it exited 0, or it was aborted while exiting
 * (SIGABRT, code 134) after printing a summary in which nothing failed. `tail` is the end of its
 * stdout (colours included).
 */
export function suitePassed(
  tail: string,
  status: { success: boolean; code: number; signal: string | null },
): { passed: boolean; abortedAfterSummary: boolean } {
  if (status.success) return { passed: true, abortedAfterSummary: false };
  // deno-lint-ignore no-control-regex -- the runner's colours
  const plain = tail.replace(/\x1b\[[0-9;]*m/g, "");
  const clean = /^ok \| \d+ passed.* \| 0 failed/m.test(plain) && !/^FAILED \|/m.test(plain);
  const aborted = status.code === 134 || status.signal === "SIGABRT";
  return { passed: aborted && clean, abortedAfterSummary: aborted && clean };
}
