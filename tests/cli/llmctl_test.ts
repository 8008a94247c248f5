/** llmctl's machine-readable contract and errors, exercised as real processes. */
import { GGMLType } from "../../kernels/quant/types.ts";
import { meta, writeGGUFFile } from "../../model/gguf/mod.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { llmctl, llmctlJson } from "../support/cli.ts";
import { FIXTURES, REPO } from "../support/paths.ts";

const STORIES_GOLDEN = `${FIXTURES}/golden/stories260K__once.json`;

Deno.test("generate --json: stories260K greedy output equals llama.cpp's golden text", async () => {
  const golden = JSON.parse(await Deno.readTextFile(STORIES_GOLDEN));
  const goldenText = await Deno.readTextFile(`${FIXTURES}/golden/stories260K__once.txt`);
  const out = await llmctlJson([
    "generate",
    "--prompt",
    golden.prompt,
    "--max-tokens",
    String(golden.n_predict),
    "--temperature",
    "0",
    "--ignore-eos",
    "--json",
  ]);
  assertEquals(out.prompt_tokens, golden.prompt_tokens);
  assertEquals(out.tokens, golden.greedy_ids);
  assertEquals(golden.prompt + out.text + "\n", goldenText);
  assert(String(out.model).endsWith("stories260K.gguf"));
  const timings = out.timings as Record<string, number>;
  for (const k of ["prompt_ms", "decode_ms", "decode_tokens_per_second"]) {
    assert(typeof timings[k] === "number" && timings[k] >= 0, `timings.${k}`);
  }
});

Deno.test("generate streams text to stdout by default", async () => {
  const r = await llmctl([
    "generate",
    "--prompt",
    "Once upon a time",
    "-n",
    "8",
    "--temperature",
    "0",
  ]);
  assertEquals(r.code, 0, r.stderr);
  assert(r.stdout.startsWith("Once upon a time, there was a little girl"), r.stdout);
  assert(r.stderr.includes("tokens/s"), r.stderr);
});

Deno.test("generate: a prompt the context cannot hold leaves only the error (no echoed prompt)", async () => {
  // Before: the prompt was echoed to stdout first, and the error landed on the same line (found
  // by an independent tester; the --endpoint path already waited for the first token).
  const r = await llmctl(["generate", "--ctx", "16", "-p", "a".repeat(80), "-n", "4"]);
  assertEquals(r.code, 1, r.stderr);
  assertEquals(r.stdout, "");
  assert(r.stderr.includes("context"), r.stderr);
  // top-p 0 keeps the most probable token, as over HTTP: greedy's text.
  const greedy = await llmctl([
    "generate",
    "-p",
    "Once upon a time",
    "-n",
    "8",
    "--temperature",
    "0",
  ]);
  const top = await llmctl(["generate", "-p", "Once upon a time", "-n", "8", "--top-p", "0"]);
  assertEquals(top.code, 0, top.stderr);
  assertEquals(top.stdout, greedy.stdout);
});

Deno.test("generate with the same seed gives the same text", async () => {
  const args = [
    "generate",
    "--prompt",
    "Once",
    "-n",
    "24",
    "--temperature",
    "1",
    "--seed",
    "42",
    "--json",
  ];
  const a = await llmctlJson(args);
  const b = await llmctlJson(args);
  assertEquals(a.tokens, b.tokens);
});

Deno.test("eval --json gives the golden's prompt tokens and top-5", async () => {
  const golden = JSON.parse(await Deno.readTextFile(STORIES_GOLDEN));
  const out = await llmctlJson(["eval", "--prompt", golden.prompt, "--top", "5", "--json"]);
  assertEquals(out.prompt_tokens, golden.prompt_tokens);
  const top = out.top as { id: number; logit: number; logprob: number }[];
  assertEquals(top.map((t) => t.id), golden.top5.map((t: { id: number }) => t.id));
  for (const [i, t] of top.entries()) {
    assert(Math.abs(t.logit - golden.top5[i].logit) < 1e-3, `logit ${i}`);
    assert(Math.abs(t.logprob - golden.top5[i].logprob) < 2e-3, `logprob ${i}`);
  }
});

Deno.test("tokenize --json with and without BOS", async () => {
  const golden = JSON.parse(await Deno.readTextFile(STORIES_GOLDEN));
  const withBos = await llmctlJson(["tokenize", "--text", golden.prompt, "--json"]);
  assertEquals(withBos.tokens, golden.prompt_tokens);
  const noBos = await llmctlJson(["tokenize", "--text", golden.prompt, "--no-bos", "--json"]);
  assertEquals(noBos.tokens, golden.prompt_tokens.slice(1));
});

Deno.test("model inspect on a ~300 MB GGUF reads less than 1 MB of it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dllm-inspect-" });
  try {
    const path = `${dir}/big.gguf`;
    const n = 24;
    const dims = [4096, 768]; // f32: 12.6 MB each, 302 MB in all
    const zeros = new Uint8Array(dims[0] * dims[1] * 4);
    await writeGGUFFile(path, {
      metadata: [meta.string("general.architecture", "llama"), meta.string("general.name", "big")],
      tensors: Array.from({ length: n }, (_, i) => ({ name: `t.${i}`, dims, type: GGMLType.F32 })),
    }, Array.from({ length: n }, () => zeros));
    const size = (await Deno.stat(path)).size;
    assert(size > 300e6, `file is ${size} bytes`);
    const out = await llmctlJson(["model", "inspect", path, "--json"]);
    assertEquals((out.tensors as unknown[]).length, n);
    assert((out.bytes_read as number) < 1_000_000, `read ${out.bytes_read} bytes`);
    const human = await llmctl(["model", "inspect", path]);
    assertEquals(human.code, 0);
    assert(human.stdout.includes("t.23") && human.stdout.includes("F32"), human.stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a corrupt model gets a precise error and exit code 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dllm-corrupt-" });
  try {
    const bytes = await Deno.readFile(`${FIXTURES}/models/tiny-f32.gguf`);
    await Deno.writeFile(`${dir}/trunc.gguf`, bytes.subarray(0, 1000));
    const r = await llmctl(["generate", "--model", `${dir}/trunc.gguf`, "-p", "hi", "-n", "2"]);
    assertEquals(r.code, 1);
    assert(/GGUF/.test(r.stderr) && /offset/.test(r.stderr), r.stderr);
    const missing = await llmctl(["eval", "--model", `${dir}/nope.gguf`, "-p", "hi"]);
    assertEquals(missing.code, 1);
    assert(missing.stderr.includes("nope.gguf"), missing.stderr);
    // The path was an argument here, not --model: the message names no flag.
    const inspect = await llmctl(["model", "inspect", `${dir}/nope.gguf`]);
    assertEquals(inspect.code, 1);
    assert(inspect.stderr.includes(`model file not found: ${dir}/nope.gguf`), inspect.stderr);
    assert(!inspect.stderr.includes("--model"), inspect.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad flags are usage errors (exit 2) that say what was wrong", async () => {
  const r = await llmctl(["generate", "--max-tokens", "lots"]);
  assertEquals(r.code, 2);
  assert(r.stderr.includes("lots"), r.stderr);
  const b = await llmctl(["generate", "--backend", "quantum"]);
  assertEquals(b.code, 2);
  assert(b.stderr.includes("quantum"), b.stderr);
});

Deno.test("--help of every command is meaningful", async () => {
  const commands = [[], ["generate"], ["eval"], ["tokenize"], ["model", "inspect"], [
    "certs",
    "add",
  ], ["certs", "init"]];
  for (const cmd of commands) {
    const r = await llmctl([...cmd, "--help"]);
    assertEquals(r.code, 0);
    assert(r.stdout.includes("Usage: llmctl"), r.stdout);
    assert(r.stdout.split("\n").length > 4, r.stdout);
    // An empty list's default is no news ("certs add" showed "(default: [])").
    assert(!r.stdout.includes("(default: [])"), r.stdout);
  }
});

Deno.test("the README's models inspect --json row names every key the command prints", async () => {
  const readme = await Deno.readTextFile(`${REPO}/README.md`);
  const row = readme.split("\n").find((l) => l.startsWith("| `models inspect FILE --json`"));
  assert(row, "README has no models inspect --json row");
  const out = await llmctlJson(["models", "inspect", `${REPO}/models/stories260K.gguf`, "--json"]);
  const keys = [
    ...Object.keys(out),
    ...Object.keys(out.model as object),
    ...Object.keys((out.tensors as object[])[0]),
  ];
  for (const k of keys) assert(row.includes(`"${k}"`), `README's row lacks "${k}": ${row}`);
});

Deno.test("chat (local): Ctrl-C ends the reply, not only its display", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      `${REPO}/cli/llmctl.ts`,
      "chat",
      "--backend",
      "reference",
      "--ctx",
      "4096",
      "-n",
      "100000",
    ],
    cwd: REPO,
    env: { NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let out = 0;
  const reading = (async () => {
    for await (const chunk of child.stdout) out += chunk.length;
  })();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("Tell me a story\n"));
  const until = async (what: string, ok: () => boolean, ms = 60_000) => {
    const end = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  try {
    await until("the reply to start", () => out > 300);
    child.kill("SIGINT");
    await new Promise((r) => setTimeout(r, 1500));
    const after = out;
    await new Promise((r) => setTimeout(r, 1500));
    // Before, generation (and output) ran on to -n tokens after Ctrl-C.
    assertEquals(out, after, "output still grows after Ctrl-C");
  } finally {
    await writer.close().catch(() => {});
    const status = await child.status;
    await reading;
    assertEquals(status.code, 0);
  }
});
