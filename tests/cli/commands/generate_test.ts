/**
 * `llmctl generate --endpoint` as a user runs it: Ctrl-C, and its --help (an agent's refusal is
 * in tests/cli/cluster_commands_test.ts).
 */
import { assert, assertEquals } from "../../support/assert.ts";
import { llmctl } from "../../support/cli.ts";
import { REPO } from "../../support/paths.ts";

Deno.test("generate --endpoint: Ctrl-C before the agent answers ends llmctl at once", async () => {
  // An endpoint that accepts connections and never answers (a hung agent).
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  let accepted!: () => void;
  const firstAccepted = new Promise<void>((r) => accepted = r);
  const accepting = (async () => {
    for await (const c of listener) {
      held.push(c);
      accepted();
    }
  })();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      `${REPO}/cli/llmctl.ts`,
      "generate",
      "--endpoint",
      `127.0.0.1:${listener.addr.port}`,
      "--timeout",
      "30s",
      "-p",
      "Once upon a time",
    ],
    cwd: REPO,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  try {
    await firstAccepted;
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    child.kill("SIGINT");
    const out = await child.output();
    const ms = Date.now() - t0;
    // Before, the readiness check ignored Ctrl-C and ran on to the whole --timeout.
    assert(ms < 5_000, `llmctl took ${ms} ms to end after Ctrl-C`);
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(stdout, "", "nothing was generated, so nothing is printed");
    assert(stderr.includes("cancelled before the first token"), stderr);
    assert(!/Uncaught|unhandled/i.test(stderr), stderr);
  } finally {
    listener.close();
    for (const c of held) c.close();
    await accepting.catch(() => {});
  }
});

Deno.test("generate --help names every key --json adds through the cluster", async () => {
  const r = await llmctl(["generate", "--help"]);
  assertEquals(r.code, 0, r.stderr);
  const help = r.stdout.replace(/\s+/g, " ");
  // The keys README's table lists for `generate --endpoint … --json`; "recoveries" was missing.
  for (const k of ["prompt_token_count", "endpoint", "placement", "recoveries"]) {
    assert(help.includes(`"${k}"`), `--help lacks "${k}": ${r.stdout}`);
  }
});
