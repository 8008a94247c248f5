/** cluster/hub/reference.ts: the `hf:` forms that parse, and the ones refused with a reason. */
import {
  formatHubReference,
  HubError,
  isHubReference,
  parseHubReference,
} from "../../../cluster/hub/mod.ts";
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";

Deno.test("hf references: a file path, a quant tag, a bare repo, each with a revision", () => {
  assertEquals(parseHubReference("hf:ggml-org/gemma-3-1b-it-GGUF/gemma-3-1b-it-Q4_K_M.gguf"), {
    repo: "ggml-org/gemma-3-1b-it-GGUF",
    owner: "ggml-org",
    name: "gemma-3-1b-it-GGUF",
    file: "gemma-3-1b-it-Q4_K_M.gguf",
    quant: undefined,
    revision: "main",
    revisionGiven: false,
  });
  const q = parseHubReference("hf:unsloth/Qwen3-8B-GGUF:q4_k_m@v1.0");
  assertEquals([q.repo, q.quant, q.file, q.revision, q.revisionGiven], [
    "unsloth/Qwen3-8B-GGUF",
    "q4_k_m",
    undefined,
    "v1.0",
    true,
  ]);
  const deep = parseHubReference("hf:o/r/sub/dir/m.gguf@refs/pr/1");
  assertEquals([deep.file, deep.revision], ["sub/dir/m.gguf", "refs/pr/1"]);
  const bare = parseHubReference("hf:o.x/r_y@0123456789abcdef0123456789abcdef01234567");
  assertEquals([bare.repo, bare.file, bare.quant], ["o.x/r_y", undefined, undefined]);
  assertEquals(formatHubReference(q), "hf:unsloth/Qwen3-8B-GGUF:q4_k_m@v1.0");
  assertEquals(formatHubReference(deep), "hf:o/r/sub/dir/m.gguf@refs/pr/1");
  assert(isHubReference("hf:o/r"));
  assert(!isHubReference("/models/hf:x.gguf") && !isHubReference("models/stories260K.gguf"));
});

Deno.test("hf references: malformed ones are usage errors that say what is wrong", () => {
  const cases: [string, string][] = [
    ["hf:", "names no owner/repo"],
    ["hf:justrepo", "names no owner/repo"],
    ["hf:/repo", "names no owner/repo"],
    ["hf:o/", "names no owner/repo"],
    ["hf:-o/r", "not a valid Hub owner or repository name"],
    ["hf:o/r--x", "not a valid Hub owner or repository name"],
    ["hf:o/r:", "not a quant tag"],
    ["hf:o/r:Q4 K", "not a quant tag"],
    ["hf:o/r/f.gguf:Q4_0", "not both"],
    ["hf:o/r/../x.gguf", "not a file path inside the repository"],
    ["hf:o/r/a//b.gguf", "not a file path inside the repository"],
    ["hf:o/r@", "not a revision"],
    ["hf:o/r@a/../b", "not a revision"],
    ["hf:o/r@-x", "not a revision"],
    ["/models/x.gguf", 'does not start with "hf:"'],
  ];
  for (const [text, why] of cases) {
    const e = assertThrows(() => parseHubReference(text), HubError, why) as HubError;
    assertEquals(e.kind, "usage", text);
    assert(e.message.includes("hf:owner/repo:QUANT"), `the message quotes the forms: ${e.message}`);
  }
});
