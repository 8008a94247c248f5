/**
 * The single binary: `deno compile` of cli/agent.ts (what the Dockerfile ships) starts an agent
 * that serves its bundled model, and its /health answers. `deno compile` needs Deno's runtime
 * binary (denort), which it downloads from Deno's release site unless DENORT_BIN points at one;
 * where neither works the test says so and is skipped.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { REPO } from "../support/paths.ts";

/** The flags of `deno task compile` (deno.json): the bundled model and WASM kernels included. */
const COMPILE_ARGS = [
  "compile",
  "-A",
  "--include",
  "models/stories260K.gguf",
  "--include",
  "kernels/wasm/worker.ts",
  "--include",
  "kernels/wasm/build/kernels.wasm",
  "--include",
  "kernels/wasm/assembly",
];

const dir = await Deno.makeTempDir({ prefix: "dllm-compiled-" });
const binary = `${dir}/distributed-llm-agent`;

const run = (args: string[]) =>
  new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();

/**
 * Compile once at load; the reason to skip when the runtime binary cannot be had here. A tiny
 * program is compiled first, so a machine without denort builds nothing else.
 */
const skip: string | undefined = await (async () => {
  const probe = `${dir}/probe.ts`;
  await Deno.writeTextFile(probe, "console.log(1);\n");
  const first = await run(["compile", "--output", `${dir}/probe`, probe]);
  const err = new TextDecoder().decode(first.stderr);
  if (!first.success) {
    if (/denort|dl\.deno\.land|error sending request|dns error/i.test(err)) {
      return `deno compile cannot get its runtime binary (denort) on this machine: ${
        err.split("\n").find((l) => /dns error|dl\.deno\.land|denort/i.test(l))?.trim() ?? err
      }`;
    }
    throw new Error(`deno compile failed on a one-line program:\n${err}`);
  }
  const wasm = await run(["run", "-A", "kernels/wasm/build.ts"]);
  if (!wasm.success) throw new Error(`WASM build: ${new TextDecoder().decode(wasm.stderr)}`);
  const out = await run([...COMPILE_ARGS, "--output", binary, "cli/agent.ts"]);
  if (!out.success) {
    throw new Error(`deno compile failed:\n${new TextDecoder().decode(out.stderr)}`);
  }
  return undefined;
})();
if (skip) {
  console.log(`tests/e2e/compiled_test.ts: skipped: ${skip}`);
  await Deno.remove(dir, { recursive: true });
}

Deno.test({
  name: "the compiled agent binary starts with its bundled model and passes a health check",
  ignore: skip !== undefined,
  fn: async () => {
    const child = new Deno.Command(binary, {
      args: [
        "--node-id",
        "compiled",
        "--rpc-port",
        "0",
        "--gossip-port",
        "0",
        "--metrics-port",
        "0",
        "--backend",
        "reference",
        "--memory-budget",
        "64MB",
      ],
      cwd: dir, // not the repo: the model must come from inside the binary
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      const lines = child.stderr.pipeThrough(new TextDecoderStream());
      let buf = "";
      let started: Record<string, unknown> | undefined;
      const all: string[] = [];
      for await (const chunk of lines) {
        buf += chunk;
        all.push(chunk);
        const line = buf.split("\n").find((l) => l.includes('"agent started"'));
        if (line) {
          started = JSON.parse(line);
          break;
        }
      }
      assert(started, `the binary did not start:\n${all.join("")}`);
      assert(String(started.model).endsWith("stories260K.gguf"), String(started.model));
      const port = Number(String(started.metrics).split(":").pop());
      const deadline = Date.now() + 15_000;
      let status = 0;
      while (Date.now() < deadline) {
        const res = await fetch(`http://127.0.0.1:${port}/health?ready=1`);
        status = res.status;
        await res.body?.cancel();
        if (status === 200) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assertEquals(status, 200, "ready: the one agent placed the whole model on itself");
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert(/^distributed_llm_layers_hosted [1-9]/m.test(metrics), "it hosts the layers");
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
});
