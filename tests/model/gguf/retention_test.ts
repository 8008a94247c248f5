/**
 * A finished read leaves nothing behind: the file source once kept its last read alive through
 * its read queue (`promise.catch()` resolves to the read's bytes), pinning a whole tensor —
 * 25 MB on the 110M bench model — for the life of the agent.
 */
import { assert } from "../../support/assert.ts";
import { FIXTURES, REPO } from "../../support/paths.ts";

Deno.test("gguf: the file source keeps no reference to bytes it has handed out", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--v8-flags=--expose-gc",
      `${REPO}/tests/support/retention_child.ts`,
      `${FIXTURES}/models/kq-q4_k_m.gguf`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert(out.success, `child failed: ${new TextDecoder().decode(out.stderr)}`);
  const r = JSON.parse(text);
  assert(r.freed, `tensor ${r.tensor} (${r.bytes} bytes) is still referenced after gc`);
});
