/** A test run without ../shared says where it looked and what to do (issue 16, item 22). */
import { assert } from "./assert.ts";

Deno.test("tests name the missing shared folder and the fix", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", `await import(${JSON.stringify(new URL("./paths.ts", import.meta.url).href)})`],
    env: { DLLM_SHARED: "/nonexistent/shared" },
    stderr: "piped",
    stdout: "null",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert(stderr.includes("the shared fixtures are not at /nonexistent/shared"), stderr);
  assert(stderr.includes("../shared") && stderr.includes("DLLM_SHARED"), stderr);
});
