/**
 * `cli/agent.ts` as a real process: a model whose hyperparameters disagree with its tensors ends
 * start-up at once with one line and a non-zero exit (issue 16, item 2).
 */
import { fileURLToPath } from "node:url";
import { assert, assertEquals } from "../support/assert.ts";
import { llmctl } from "../support/cli.ts";
import { SHARED } from "../support/paths.ts";

const AGENT = fileURLToPath(new URL("../../cli/agent.ts", import.meta.url));
const MODEL = `${SHARED}/models/stories260K.gguf`;

/** A copy of stories260K with the u32 metadata value of `key` replaced. */
async function withU32(dir: string, key: string, value: number): Promise<string> {
  const bytes = await Deno.readFile(MODEL);
  const name = new TextEncoder().encode(key);
  const at = bytes.findIndex((_, i) => name.every((b, j) => bytes[i + j] === b));
  assert(at > 8, `${key} not found`);
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const type = view.getUint32(at + name.length, true);
  assertEquals(type, 4, `${key} is not a u32 (GGUF type ${type})`);
  view.setUint32(at + name.length + 4, value, true);
  const path = `${dir}/${key}-${value}.gguf`;
  await Deno.writeFile(path, bytes);
  return path;
}

/** Run the agent to its exit; one that is still running after 20 s is killed (a wedged agent). */
/** A copy of stories260K whose general.architecture is followed by `extra` bytes of "x". */
async function withLongArchitecture(dir: string, extra: number): Promise<string> {
  const bytes = await Deno.readFile(MODEL);
  const name = new TextEncoder().encode("general.architecture");
  const at = bytes.findIndex((_, i) => name.every((b, j) => bytes[i + j] === b));
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const typeAt = at + name.length;
  assertEquals(view.getUint32(typeAt, true), 8, "general.architecture is not a string");
  const len = Number(view.getBigUint64(typeAt + 4, true));
  const end = typeAt + 12 + len;
  // A multiple of the 32-byte alignment keeps the tensor data aligned after the longer header.
  assertEquals(extra % 32, 0);
  const out = new Uint8Array(bytes.length + extra);
  out.set(bytes.subarray(0, end));
  out.fill(0x78, end, end + extra);
  out.set(bytes.subarray(end), end + extra);
  new DataView(out.buffer).setBigUint64(typeAt + 4, BigInt(len + extra), true);
  const path = `${dir}/long-arch.gguf`;
  await Deno.writeFile(path, out);
  return path;
}

async function runAgent(args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", AGENT, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const out = await child.output();
  clearTimeout(timer);
  return {
    code: out.code,
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("a corrupt block_count ends the agent with one line, at once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dllm-agent-" });
  try {
    // No time bound (this machine's load decides times): an agent that sizes anything by the
    // bogus count wedges for minutes or runs out of memory, and runAgent's 20 s kill turns that
    // into a signal exit, which the exit-code check below refuses.
    for (const n of [1_000_000, 1_000_000_000]) {
      const model = await withU32(dir, "llama.block_count", n);
      const r = await runAgent([
        "--model",
        model,
        "--backend",
        "auto",
        "--rpc-port",
        "0",
        "--gossip-port",
        "0",
        "--metrics-port",
        "0",
        "--http-port",
        "0",
      ]);
      assertEquals(r.code, 1, r.stderr);
      const lines = r.stderr.trimEnd().split("\n");
      assertEquals(lines.length, 1, r.stderr);
      assert(lines[0].includes(`block_count is ${n}`), lines[0]);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a megabyte in the model's metadata makes one bounded error line, not megabytes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dllm-agent-" });
  try {
    const model = await withLongArchitecture(dir, 1_000_000);
    const r = await runAgent(["--model", model, "--rpc-port", "0", "--gossip-port", "0"]);
    assertEquals(r.code, 1, r.stderr.slice(0, 2000));
    const lines = r.stderr.trimEnd().split("\n");
    assertEquals(lines.length, 1, r.stderr.slice(0, 2000));
    assert(lines[0].includes("unsupported architecture"), lines[0]);
    assert(
      new TextEncoder().encode(lines[0]).length <= 1024 + "agent: ".length,
      `${r.stderr.length} bytes`,
    );
    const cli = await llmctl(["generate", "--model", model, "-p", "hi", "-n", "1"]);
    assertEquals(cli.code, 1);
    assert(cli.stderr.includes("unsupported architecture"), cli.stderr.slice(0, 2000));
    assert(cli.stderr.length <= 1100, `llmctl printed ${cli.stderr.length} bytes`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a data port in use is named with its flag", async () => {
  // "Address already in use (os error 98)" named neither the port nor the flag.
  const held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (held.addr as Deno.NetAddr).port;
  try {
    const r = await runAgent([
      "--data-port",
      String(port),
      ...["--rpc-port", "0", "--gossip-port", "0", "--metrics-port", "0", "--http-port", "0"],
    ]);
    assert(r.code !== 0, r.stderr);
    assert(r.stderr.includes(`port ${port} is already in use`), r.stderr);
    assert(r.stderr.includes("--data-port"), r.stderr);
  } finally {
    held.close();
  }
});
