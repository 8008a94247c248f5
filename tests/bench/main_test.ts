/**
 * Every benchmark is listed by `llmctl bench` and answers `--help` without running (issue 16,
 * item 17): `deno task bench gossip --help` used to run the whole 13-minute benchmark.
 */
import { BENCHES } from "../../bench/names.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { llmctl } from "../support/cli.ts";
import { REPO } from "../support/paths.ts";

Deno.test("llmctl bench --list names every benchmark of bench/", async () => {
  const r = await llmctl(["bench", "--list", "--json"]);
  assertEquals(r.code, 0, r.stderr);
  assertEquals(JSON.parse(r.stdout).benches, Object.keys(BENCHES));
  // Every entry point of bench/ is listed (not a fixed count: new benches join the list).
  const entries = [...Deno.readDirSync(`${REPO}/bench`)]
    .filter((e) => e.isFile && e.name.endsWith(".ts") && !["main.ts", "names.ts"].includes(e.name))
    .map((e) => e.name).sort();
  assertEquals(Object.values(BENCHES).sort(), entries);
});

Deno.test("every benchmark answers --help at once, without running", async () => {
  for (const name of Object.keys(BENCHES)) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", `${REPO}/bench/main.ts`, name, "--help"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // A benchmark that starts measuring instead is killed: --help must not take this long.
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const out = await child.output();
    clearTimeout(timer);
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 0, `${name} --help: ${text.slice(0, 500)}`);
    assert(text.trim().length > 0, `${name} --help printed nothing`);
    assert(
      !text.trimStart().startsWith("{"),
      `${name} --help ran the benchmark: ${text.slice(0, 500)}`,
    );
  }
});
