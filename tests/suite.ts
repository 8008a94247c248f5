/**
 * `deno task test`: the whole suite, `deno test --allow-all --parallel tests/` (extra arguments
 * are passed on), with one exception to its exit code.
 *
 * Deno 2.9.6's test runner is sometimes aborted by glibc while the process exits, after it has
 * printed every test's result and its summary (`corrupted size vs. prev_size in fastbins`,
 * SIGABRT, exit code 134; README "Development"). When the summary it printed says that nothing
 * failed, that abort is reported in a NOTE line and the run passes; any other failure, or an
 * abort before the summary, fails as before. The abort is the runtime's open issue, not hidden:
 * the NOTE says so every time.
 *
 * @module
 */
import { suitePassed } from "./support/suite_status.ts";
const args = ["test", "--allow-all", "--parallel", ...(Deno.args.length ? Deno.args : ["tests/"])];
const child = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "inherit" })
  .spawn();
// The summary is the last lines of stdout: keep a tail while passing everything through.
let tail = "";
const dec = new TextDecoder();
for await (const chunk of child.stdout) {
  await Deno.stdout.write(chunk);
  tail = (tail + dec.decode(chunk, { stream: true })).slice(-4096);
}
const status = await child.status;
const { passed, abortedAfterSummary } = suitePassed(tail, status);
if (abortedAfterSummary) {
  console.error(
    "NOTE: the test runner was aborted while exiting, after its summary reported every test " +
      "passed (Deno 2.9.6 runtime issue, see README Development); the suite passed.",
  );
}
Deno.exit(passed ? 0 : status.code || 1);
