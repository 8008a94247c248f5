/**
 * `llmctl models pull` and `--model hf:…` as a user runs them (llmctl as a subprocess) against
 * a local fake Hub (tests/support/fake_hub.ts; huggingface.co is not reachable from tests): the
 * path printed on stdout with progress on stderr, `--json`, the cached second pull, exit codes
 * for a gated repo and a malformed reference, the token never printed, and generate / models
 * inspect given an `hf:` model.
 */
import { FakeHub, fixture, sha256Hex } from "../../support/fake_hub.ts";
import { llmctl } from "../../support/cli.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { FIXTURES, REPO } from "../../support/paths.ts";

const TOKEN = "hf_gatedTestTokenDoNotLogMe0123456789abcdef";

Deno.test("llmctl models pull: path on stdout, progress on stderr, --json, cache reuse, errors", async () => {
  const hub = new FakeHub();
  await hub.start();
  const cache = await Deno.makeTempDir({ prefix: "llmctl-pull-" });
  const env = { HF_ENDPOINT: hub.url, DLLM_CACHE_DIR: cache, HF_TOKEN: "" };
  try {
    const r = await llmctl(["models", "pull", "hf:test-org/tiny-GGUF:Q8_0"], env);
    assertEquals(r.code, 0, r.stderr);
    const path = r.stdout.trim();
    const commit = hub.commit("test-org/tiny-GGUF");
    assertEquals(path, `${cache}/hub/test-org/tiny-GGUF/${commit}/tiny-Q8_0.gguf`);
    assertEquals(sha256Hex(await Deno.readFile(path)), sha256Hex(fixture("tiny-q8_0.gguf")));
    assert(r.stderr.includes("pulling tiny-Q8_0.gguf") && r.stderr.includes("100%"), r.stderr);

    const j = await llmctl(["models", "pull", "hf:test-org/tiny-GGUF:Q8_0", "--json"], env);
    assertEquals(j.code, 0, j.stderr);
    const out = JSON.parse(j.stdout);
    assertEquals(Object.keys(out), [
      "path",
      "ref",
      "repo",
      "file",
      "revision",
      "commit",
      "size",
      "sha256",
      "cached",
      "offline",
    ]);
    const readme = await Deno.readTextFile(`${REPO}/README.md`);
    const row = readme.split("\n").find((l) => l.startsWith("| `models pull REF --json`"));
    for (const k of Object.keys(out)) assert(row?.includes(`"${k}"`), `README's row lacks "${k}"`);
    assertEquals([out.path, out.cached, out.commit, out.file], [
      path,
      true,
      commit,
      "tiny-Q8_0.gguf",
    ]);
    for (const line of j.stderr.trim().split("\n")) JSON.parse(line); // progress is JSON lines

    // --cache-dir wins over DLLM_CACHE_DIR.
    const other = await Deno.makeTempDir({ prefix: "llmctl-pull-dir-" });
    const d = await llmctl([
      "models",
      "pull",
      "hf:test-org/tiny-GGUF/tiny-Q4_0.gguf",
      "--cache-dir",
      other,
    ], env);
    assertEquals(d.code, 0, d.stderr);
    assert(d.stdout.trim().startsWith(`${other}/hub/test-org/tiny-GGUF/`), d.stdout);
    await Deno.remove(other, { recursive: true });

    const gated = await llmctl(["models", "pull", "hf:gated-org/secret-GGUF:Q8_0"], {
      ...env,
      HF_TOKEN: "hf_wrongTokenAlsoSecret000000000000000000",
    });
    assertEquals(gated.code, 1, gated.stderr);
    assert(
      gated.stderr.includes(`accept the license at ${hub.url}/gated-org/secret-GGUF`),
      gated.stderr,
    );
    assert(!(gated.stdout + gated.stderr).includes("hf_wrongToken"), "the token is never printed");

    const ok = await llmctl(["models", "pull", "hf:gated-org/secret-GGUF:Q8_0", "--json"], {
      ...env,
      HF_TOKEN: TOKEN,
    });
    assertEquals(ok.code, 0, ok.stderr);
    assert(!(ok.stdout + ok.stderr).includes(TOKEN), "the token is never printed");

    const missing = await llmctl(["models", "pull", "hf:test-org/tiny-GGUF:Q3_K_S"], env);
    assertEquals(missing.code, 1);
    assert(missing.stderr.includes("tiny-Q8_0.gguf (Q8_0)"), missing.stderr);
    const bad = await llmctl(["models", "pull", "hf:not-a-ref"], env);
    assertEquals(bad.code, 2, bad.stderr);
    assert(bad.stderr.includes("names no owner/repo"), bad.stderr);
    const deploy = await llmctl(["models", "deploy", "hf:test-org/tiny-GGUF:Q8_0"], env);
    assertEquals(deploy.code, 2, deploy.stderr);
    assert(deploy.stderr.includes("needs --from-here"), deploy.stderr);
    const plain = await llmctl(["models", "pull", "models/stories260K.gguf"], env);
    assertEquals(plain.code, 2, plain.stderr);
  } finally {
    await hub.stop();
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("llmctl generate and models inspect take --model hf:… like a path", async () => {
  const hub = new FakeHub();
  await hub.start();
  const cache = await Deno.makeTempDir({ prefix: "llmctl-hf-model-" });
  const env = { HF_ENDPOINT: hub.url, DLLM_CACHE_DIR: cache };
  try {
    const golden = JSON.parse(await Deno.readTextFile(`${FIXTURES}/golden/stories260K__once.json`));
    const g = await llmctl([
      "generate",
      "--model",
      "hf:test-org/stories260K-GGUF",
      "--backend",
      "reference",
      "-p",
      golden.prompt,
      "-n",
      "12",
      "--temperature",
      "0",
      "--json",
    ], env);
    assertEquals(g.code, 0, g.stderr);
    assertEquals(JSON.parse(g.stdout).tokens, golden.greedy_ids.slice(0, 12));
    const inspect = await llmctl([
      "models",
      "inspect",
      "hf:test-org/tiny-GGUF/kq/kq-Q4_K_M.gguf",
      "--json",
    ], env);
    assertEquals(inspect.code, 0, inspect.stderr);
    const info = JSON.parse(inspect.stdout);
    assert(
      String(info.path).endsWith("/kq/kq-Q4_K_M.gguf") && String(info.path).startsWith(cache),
      info.path,
    );
    assertEquals(info.file_size, fixture("kq-q4_k_m.gguf").length);
  } finally {
    await hub.stop();
    await Deno.remove(cache, { recursive: true });
  }
});
