/**
 * cluster/hub/listing.ts: choosing the file a reference names — quant tags (case-insensitive,
 * whole words first), ambiguity and absence listing what exists, non-GGUF and sharded files
 * refused — and the Link-header pagination.
 */
import {
  HubError,
  parseHubReference,
  quantOf,
  type RepoFile,
  selectFile,
  shardInfo,
} from "../../../cluster/hub/mod.ts";
import { isSafeRepoPath, nextLink } from "../../../cluster/hub/listing.ts";
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";

const files: RepoFile[] = [
  "README.md",
  "config.json",
  "m-Q4_K_M.gguf",
  "m-Q4_K_S.gguf",
  "m-Q4_K.gguf",
  "m-Q8_0.gguf",
  "m-F16.gguf",
  "mmproj-m-F16.gguf",
  "m-IQ2_XXS.gguf",
  "BF16/m-BF16-00001-of-00002.gguf",
  "BF16/m-BF16-00002-of-00002.gguf",
].map((path) => ({ path, size: 1 }));

const pick = (ref: string, list = files) => selectFile(list, parseHubReference(ref)).path;
const refused = (ref: string, kind: string, text: string, list = files) => {
  const e = assertThrows(() => selectFile(list, parseHubReference(ref)), HubError, text);
  assertEquals((e as HubError).kind, kind, e.message);
  return e.message;
};

Deno.test("quant selection: case-insensitive, whole-word tags before substrings", () => {
  assertEquals(pick("hf:o/r:Q4_K_M"), "m-Q4_K_M.gguf");
  assertEquals(pick("hf:o/r:q4_k_m"), "m-Q4_K_M.gguf");
  assertEquals(pick("hf:o/r:Q8_0"), "m-Q8_0.gguf");
  // Q4_K is its own file, not a prefix of Q4_K_M / Q4_K_S.
  assertEquals(pick("hf:o/r:Q4_K"), "m-Q4_K.gguf");
  // F16 is the model, not the projector; IQ2 matches only as a substring, once.
  assertEquals(pick("hf:o/r:F16"), "m-F16.gguf");
  assertEquals(pick("hf:o/r:iq2"), "m-IQ2_XXS.gguf");
  assertEquals(pick("hf:o/r/m-Q8_0.gguf"), "m-Q8_0.gguf");
});

Deno.test("quant selection: ambiguous and missing tags list what exists", () => {
  const amb = refused("hf:o/r:Q4", "usage", "matches 3 GGUF files");
  for (const f of ["m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "m-Q4_K.gguf"]) assert(amb.includes(f), amb);
  const missing = refused("hf:o/r:Q5_K_M", "not_found", 'has "Q5_K_M" in its name');
  assert(
    missing.includes("m-Q8_0.gguf (Q8_0)") && missing.includes("m-Q4_K_M.gguf (Q4_K_M)"),
    missing,
  );
  assert(!missing.includes("mmproj"), "a projector is not offered as a model");
  const bare = refused("hf:o/r", "usage", "name one with :QUANT");
  assert(bare.includes("m-F16.gguf (F16)"), bare);
  assertEquals(
    pick("hf:o/r", [{ path: "only.gguf", size: 1 }, { path: "a.md", size: 1 }]),
    "only.gguf",
  );
  refused("hf:o/r", "not_found", "has no GGUF model file", [{ path: "a.safetensors", size: 1 }]);
});

Deno.test("file selection: a missing path lists close matches; non-GGUF and sharded files are refused", () => {
  const m = refused("hf:o/r/m-Q4_K_N.gguf", "not_found", "m-Q4_K_N.gguf not found in o/r@main");
  assert(m.includes("close matches: m-Q4_K"), m);
  refused("hf:o/r/config.json", "unsupported", "config.json is not a GGUF file");
  const shard = refused("hf:o/r:BF16", "unsupported", "split into 2 files");
  assert(shard.includes("llama-gguf-split --merge"), shard);
  refused("hf:o/r/BF16/m-BF16-00002-of-00002.gguf", "unsupported", "split into 2 files");
});

Deno.test("shard and quant names, Link pagination", () => {
  assertEquals(shardInfo("a/m-Q4_0-00002-of-00005.gguf"), {
    prefix: "a/m-Q4_0",
    index: 2,
    count: 5,
  });
  assertEquals(shardInfo("m-Q4_0.gguf"), undefined);
  assertEquals(quantOf("dir/gemma-3-1b-it-Q4_K_M.gguf"), "Q4_K_M");
  assertEquals(quantOf("m.BF16-00001-of-00002.gguf"), "BF16");
  assertEquals(
    nextLink('<https://hf.co/api/models/o/r/tree/main?cursor=abc>; rel="next"', "https://hf.co/x"),
    "https://hf.co/api/models/o/r/tree/main?cursor=abc",
  );
  assertEquals(
    nextLink('</x?cursor=2>; rel="next"', "http://127.0.0.1:9/a"),
    "http://127.0.0.1:9/x?cursor=2",
  );
  assertEquals(nextLink('<https://a/b>; rel="prev"', "https://a"), undefined);
  assertEquals(nextLink(null, "https://a"), undefined);
});

Deno.test("listed paths that could leave the cache directory are not taken", () => {
  for (const p of ["m.gguf", "a/b/m-Q4_0.gguf", ".hidden/m.gguf"]) assert(isSafeRepoPath(p), p);
  for (
    const p of [
      "../m.gguf",
      "a/../../m.gguf",
      "/etc/m.gguf",
      "a//m.gguf",
      "a\\m.gguf",
      "./m.gguf",
      "",
    ]
  ) {
    assert(!isSafeRepoPath(p), p);
  }
});
