/** `deno task demo` argument checks: a bad value is a usage error before any agent starts. */
import { assert, assertEquals } from "../support/assert.ts";
import { REPO } from "../support/paths.ts";

Deno.test("demo --backend with an unknown name exits 2 without starting agents", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${REPO}/cli/demo.ts`, "--backend", "quantum"],
    cwd: REPO,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  // Before, three agents started, each refused the name, and the demo exited 1.
  assertEquals(out.code, 2, stderr);
  assert(stderr.includes("quantum"), stderr);
  assert(!stderr.includes("starting"), stderr);
});
