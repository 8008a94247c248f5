/**
 * llmctl's cluster commands against real agent processes: every subcommand's --json, the
 * errors users see, drain moving layers, and --help of every command.
 */
import { buildProgram } from "../../cli/llmctl.ts";
import type { Command } from "@commander-js/extra-typings";
import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import {
  type AgentProcess,
  startAgent,
  startCluster,
  stopAll,
  waitForPlacement,
} from "../support/agents.ts";
import { llmctl, spawnLlmctl } from "../support/cli.ts";
import { CliError, parseTimeout } from "../../cli/client.ts";
import { intOption } from "../../cli/common.ts";
import { FIXTURES, STORIES } from "../support/paths.ts";

async function json(args: string[]): Promise<Record<string, unknown>> {
  const r = await llmctl(args);
  assertEquals(r.code, 0, `llmctl ${args.join(" ")}:\n${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Run llmctl with `input` on stdin. */
async function llmctlWithInput(args: string[], input: string) {
  const child = spawnLlmctl(args, { stdin: true });
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(input));
  await w.close();
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function waitFor(what: string, check: () => Promise<boolean>, ms = 15_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

Deno.test({
  name: "llmctl against a 2-agent cluster: every read command's --json, generate, chat, drain",
  fn: async (t) => {
    // Each agent can hold the whole model, so draining one leaves a placement.
    const agents: AgentProcess[] = await startCluster(["a", "b"], {
      model: STORIES,
      memoryBudget: "4MB",
    });
    try {
      await waitForPlacement(agents[0], 2);
      const ep = ["--endpoint", `127.0.0.1:${agents[0].rpcPort}`];

      await t.step("cluster status --json", async () => {
        const s = await json(["cluster", "status", ...ep, "--json"]);
        assertEquals(s.responder, "a");
        assertEquals(s.ready, true);
        assertEquals((s.nodes as { alive: number }).alive, 2);
        const layers = s.layers as { placed: number; total: number };
        assertEquals(layers, { placed: 5, total: 5 });
        const stages = s.stages as { node: string; from: number; to: number }[];
        assertEquals(stages[0].from, 0);
        assertEquals(stages.at(-1)!.to, 5);
      });

      await t.step("cluster info --json is the GetClusterInfo answer", async () => {
        const s = await json(["cluster", "info", ...ep, "--json"]);
        // One style in every --json output: snake_case keys, 64-bit counts as numbers.
        assertEquals(s.responder_id, "a");
        assertEquals((s.nodes as { id: string }[]).map((n) => n.id), ["a", "b"]);
        assertEquals((s.placement as { total_layers: number }).total_layers, 5);
        const node = (s.nodes as Record<string, unknown>[])[0];
        assertEquals(typeof node.incarnation, "number");
        const res = node.resources as Record<string, unknown>;
        assertEquals(typeof res.memory_budget_bytes, "number");
        assert(!Object.keys(node).some((k) => /[A-Z]/.test(k)), Object.keys(node).join(","));
      });

      await t.step("nodes list --json (DLLM_ENDPOINT works like --endpoint)", async () => {
        const r = await llmctl(["nodes", "list", "--json"], {
          DLLM_ENDPOINT: `127.0.0.1:${agents[1].rpcPort}`,
        });
        assertEquals(r.code, 0, r.stderr);
        const s = JSON.parse(r.stdout);
        assertEquals(s.responder, "b");
        const nodes = s.nodes as { id: string; state: string; backend: string }[];
        assertEquals(nodes.map((n) => [n.id, n.state, n.backend]), [
          ["a", "NODE_STATE_ALIVE", "reference"],
          ["b", "NODE_STATE_ALIVE", "reference"],
        ]);
      });

      await t.step("nodes describe --json asks the node itself", async () => {
        const s = await json(["nodes", "describe", "b", ...ep, "--json"]);
        assertEquals((s.node as { id: string }).id, "b");
        assertEquals((s.health as { node_id: string; status: string }).node_id, "b");
        assertEquals((s.health as { status: string }).status, "SERVING_STATUS_SERVING");
        assert((s.resources as { resources: { cpu_cores: number } }).resources.cpu_cores > 0);
        assertEquals((s.metrics as { metrics: { node_id: string } }).metrics.node_id, "b");
        const missing = await llmctl(["nodes", "describe", "zz", ...ep]);
        assertEquals(missing.code, 1);
        assert(missing.stderr.includes('no node "zz"'), missing.stderr);
      });

      await t.step("models list --json and models inspect --json", async () => {
        const s = await json(["models", "list", ...ep, "--json"]);
        const models = s.models as { model: string; total_layers: number; ready: boolean }[];
        assertEquals(models.length, 1);
        assert(models[0].model.startsWith("stories260K.gguf@"), models[0].model);
        assertEquals([models[0].total_layers, models[0].ready], [5, true]);
        const i = await json(["models", "inspect", STORIES, "--json"]);
        assertEquals((i.metadata as Record<string, unknown>)["general.architecture"], "llama");
      });

      await t.step(
        "models deploy of a missing file names it; undeploy of an unknown model",
        async () => {
          const r = await llmctl(["models", "deploy", "x.gguf", ...ep]);
          assertEquals(r.code, 1);
          assert(r.stderr.includes("cannot read x.gguf"), r.stderr);
          const u = await json(["models", "undeploy", "x.gguf", ...ep, "--json"]);
          assertEquals(u.nodes, []);
          assert(String(u.message).includes("served nowhere"), String(u.message));
        },
      );

      await t.step("generate --endpoint --json: greedy tokens equal the golden", async () => {
        const g = JSON.parse(
          await Deno.readTextFile(`${FIXTURES}/golden/stories260K__once.json`),
        );
        const s = await json([
          "generate",
          ...ep,
          "-p",
          g.prompt,
          "-n",
          "24",
          "--temperature",
          "0",
          "--json",
        ]);
        assertEquals(s.tokens, g.greedy_ids.slice(0, 24));
        assertEquals(s.prompt_token_count, g.prompt_tokens.length);
        assert(!("prompt_tokens" in s), "no token ids through the cluster");
        assertEquals(s.finish_reason, "length");
        const timings = s.timings as Record<string, number>;
        for (const k of ["prompt_ms", "decode_ms", "decode_tokens_per_second"]) {
          assert(typeof timings[k] === "number", k);
        }
        // One clock: 23 tokens after the first in decode_ms at the rate given (the decode time
        // was this client's beside the agent's rate, and the two disagreed).
        const implied = 23 / timings.decode_tokens_per_second * 1000;
        assert(
          Math.abs(implied - timings.decode_ms) <= 0.02 * implied + 0.01,
          JSON.stringify(timings),
        );
        assertEquals((s.placement as unknown[]).length >= 1, true);
      });

      await t.step("chat: streams replies, /history, /reset, /system", async () => {
        const r = await llmctlWithInput(
          ["chat", ...ep, "-n", "12", "--temperature", "0"],
          "Hello\n/history\n/reset\n/history\n/system Be brief.\n/exit\n",
        );
        assertEquals(r.code, 0, r.stderr);
        const lines = r.stdout.split("\n");
        assert(lines[0].trim().length > 0, `a reply streamed: ${r.stdout}`);
        assert(r.stdout.includes("user: Hello"), r.stdout);
        assert(r.stdout.includes("assistant: "), r.stdout);
        assert(r.stdout.includes("(conversation forgotten)"), r.stdout);
        assert(r.stdout.includes("(system prompt set; conversation reset)"), r.stdout);
      });

      await t.step("version --json reports llmctl and the agent", async () => {
        const s = await json(["version", ...ep, "--json"]);
        assertEquals(typeof s.llmctl, "string");
        assertEquals((s.agent as { node: string }).node, "a");
      });

      await t.step("cluster replan --dry-run and nodes log-level", async () => {
        const r = await json(["cluster", "replan", ...ep, "--dry-run", "--json"]);
        assert(String(r.message).startsWith("would re-plan"), String(r.message));
        assertEquals((r.placement as { total_layers: number }).total_layers, 5);
        const l = await json(["nodes", "log-level", "b", "warn", ...ep, "--json"]);
        assertEquals(l.message, "set b's log level from debug to warn");
        // An unknown level is a usage error (exit 2), refused before the agent is asked.
        const bad = await llmctl(["nodes", "log-level", "a", "loud", ...ep]);
        assertEquals(bad.code, 2);
        assert(bad.stderr.includes("'loud'"), bad.stderr);
      });

      await t.step(
        "cluster status from an agent started with --no-model names who serves",
        async () => {
          // It said "model: none placed" beside nodes list's stages, as if nothing were served.
          const z = await startAgent({
            id: "z",
            seeds: [agents[0].gossipAddr],
            extra: ["--no-model"],
          });
          agents.push(z);
          const zep = ["--endpoint", `127.0.0.1:${z.rpcPort}`];
          await waitFor("z to see the others' stages", async () => {
            const s = await json(["cluster", "status", ...zep, "--json"]);
            const e = s.served_elsewhere as { stages: unknown[] } | null;
            return (e?.stages.length ?? 0) >= 1;
          });
          const s = await json(["cluster", "status", ...zep, "--json"]);
          assertEquals(s.model, null);
          assert(String((s.served_elsewhere as { model: string }).model).startsWith("stories260K"));
          const text = await llmctl(["cluster", "status", ...zep]);
          assert(text.stdout.includes("z places no model itself; the cluster serves"), text.stdout);
          // It forwards what it receives (a gateway), so it does not send the user elsewhere.
          assert(text.stdout.includes("z forwards requests there"), text.stdout);
        },
      );

      await t.step("nodes drain: dry run, then the layers move off the node", async () => {
        const dry = await json(["nodes", "drain", "b", ...ep, "--dry-run", "--json"]);
        assert(String(dry.message).startsWith("would drain b"), String(dry.message));
        const stages = (dry.placement as { stages: { node_id: string }[] }).stages;
        assertEquals(stages.map((s) => s.node_id), ["a"]);
        const done = await json(["nodes", "drain", "b", ...ep, "--json"]);
        assert(String(done.message).startsWith("drained b"), String(done.message));
        await waitFor("b to drop its layers", async () => {
          const s = await json(["cluster", "status", ...ep, "--json"]);
          const st = s.stages as { node: string }[];
          return s.ready === true && st.length === 1 && st[0].node === "a";
        });
        const again = await json(["nodes", "drain", "b", ...ep, "--json"]);
        assert(String(again.message).includes("already drained"), String(again.message));
        // Said in the listing, and left out of the cluster's budget (before: "—" as for an
        // agent started with --no-model, and its budget counted).
        const list = await llmctl(["nodes", "list", ...ep]);
        const row = list.stdout.split("\n").find((l) => /^b\s/.test(l)) ?? "";
        assert(/\bdrained\b/.test(row), list.stdout);
        const info = await json(["cluster", "info", ...ep, "--json"]);
        const nodes = info.nodes as {
          id: string;
          drained: boolean;
          resources: { memory_budget_bytes: number };
        }[];
        assertEquals(nodes.filter((n) => n.drained).map((n) => n.id), ["b"]);
        const offered = nodes.filter((n) => !n.drained)
          .reduce((sum, n) => sum + n.resources.memory_budget_bytes, 0);
        assert(offered > 0);
        assertEquals(
          (info.metrics as { memory_budget_bytes: number }).memory_budget_bytes,
          offered,
        );
      });
    } finally {
      await stopAll(agents);
    }
  },
});

Deno.test("no agent at the endpoint: exit code 3 and what to do", async () => {
  const r = await llmctl(["cluster", "status", "--endpoint", "127.0.0.1:1", "--json"]);
  assertEquals(r.code, 3);
  assert(r.stderr.includes("no agent at 127.0.0.1:1"), r.stderr);
  assert(r.stderr.includes("deno task agent"), r.stderr);
  const tls = await llmctl(["nodes", "list", "--tls-cert", "x.crt"]);
  assertEquals(tls.code, 2);
  assert(tls.stderr.includes("--tls-key"), tls.stderr);
  for (const bad of ["soon", "30", "0.4ms"]) {
    const timeout = await llmctl(["nodes", "list", "--timeout", bad]);
    assertEquals(timeout.code, 2, bad);
  }
  assertEquals(parseTimeout("1.5s"), 1500);
  assertEquals(parseTimeout("2m"), 120_000);
  // An empty model undeployed the served one on every agent (an unset variable in a script).
  const undeploy = await llmctl(["models", "undeploy", "", "--endpoint", "127.0.0.1:1"]);
  assertEquals(undeploy.code, 2, undeploy.stderr);
  assert(undeploy.stderr.includes("the model is empty"), undeploy.stderr);
  // --nodes naming no node deployed to every member.
  const wide = await llmctl(["models", "deploy", "x.gguf", "--nodes", ", ,", "-e", "127.0.0.1:1"]);
  assertEquals(wide.code, 2, wide.stderr);
  assert(wide.stderr.includes("--nodes names no node"), wide.stderr);
  // An address --from-here cannot listen on is the flag's mistake (it was a lookup error, exit 1).
  const here = await llmctl([
    "models",
    "deploy",
    STORIES,
    "--from-here",
    "999.1.1.1",
    "-e",
    "127.0.0.1:1",
  ]);
  assertEquals(here.code, 2, here.stderr);
  assert(here.stderr.includes("--from-here 999.1.1.1: cannot listen there"), here.stderr);
  // gRPC's timeout takes 8 digits of ms (1667m was a protocol error; 40000m fired at once).
  assertEquals(parseTimeout("1666m"), 99_960_000);
  assertThrows(() => parseTimeout("1667m"), CliError, "1666m");
  // Number's other spellings of integers, and an empty one (0: --top-k off).
  for (const bad of ["0x3", "1e1", "", " "]) {
    assertThrows(() => intOption(0)(bad), Error, "integer");
  }
  assertThrows(() => intOption(1, 2 ** 31 - 1)("4294967297"), Error, "from 1 to 2147483647");
  // A port out of range is a usage error that says so (it was "Invalid URL", exit 1).
  const port = await llmctl(["nodes", "list", "--endpoint", "127.0.0.1:99999"]);
  assertEquals(port.code, 2, port.stderr);
  assert(port.stderr.includes("port from 1 to 65535"), port.stderr);
  // version asked about a dead agent prints its own version but does not exit 0.
  const v = await llmctl(["version", "--endpoint", "127.0.0.1:1"]);
  assertEquals(v.code, 3, v.stderr);
  assert(v.stdout.startsWith("llmctl "), v.stdout);
  // Local-model flags with --endpoint were silently ignored; they are usage errors now.
  for (const cmd of ["generate", "chat"]) {
    const r = await llmctl([cmd, "--endpoint", "127.0.0.1:1", "--ctx", "4", "--threads", "7"]);
    assertEquals(r.code, 2, `${cmd}: ${r.stderr}`);
    assert(r.stderr.includes("--threads, --ctx work only with a local model"), r.stderr);
  }
});

Deno.test("generate and chat against an agent that accepts but never answers: exit 3 in time", async () => {
  // A stopped agent: its kernel accepts the connection, nothing answers. Before, a stream had
  // no deadline and llmctl waited forever.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  (async () => {
    for await (const c of listener) held.push(c);
  })().catch(() => {});
  const ep = `127.0.0.1:${listener.addr.port}`;
  try {
    for (const cmd of [["generate", "-p", "Once", "-n", "4"], ["chat"]]) {
      const t0 = performance.now();
      const r = await llmctl([...cmd, "--endpoint", ep, "--timeout", "1s"]);
      const s = (performance.now() - t0) / 1000;
      assertEquals(r.code, 3, `${cmd[0]}: ${r.stderr}`);
      assert(s < 20, `${cmd[0]} took ${s.toFixed(1)} s`);
    }
  } finally {
    listener.close();
    for (const c of held) c.close();
  }
});

Deno.test("completions, bench --list and version work without an agent", async () => {
  for (const shell of ["bash", "zsh", "fish"]) {
    const r = await llmctl(["completions", shell]);
    assertEquals(r.code, 0, r.stderr);
    for (const word of ["cluster", "nodes", "drain", "--endpoint"]) {
      assert(r.stdout.includes(word), `${shell} completion lacks ${word}`);
    }
  }
  const bash = await llmctl(["completions", "bash"]);
  const check = await new Deno.Command("bash", {
    args: ["-n", "-c", bash.stdout],
  }).output();
  assertEquals(check.code, 0, new TextDecoder().decode(check.stderr));
  // Run the completion as bash would: a flag's value is not a command word (before,
  // `llmctl -e h:p cluster <TAB>` offered the root commands).
  const complete = async (line: string[]) => {
    const script = `${bash.stdout}
COMP_WORDS=(${line.map((w) => `'${w}'`).join(" ")})
` +
      `COMP_CWORD=${line.length - 1}
_llmctl
echo "\${COMPREPLY[*]}"`;
    const out = await new Deno.Command("bash", { args: ["-c", script] }).output();
    return new TextDecoder().decode(out.stdout).trim().split(" ");
  };
  const words = await complete(["llmctl", "-e", "h:7950", "cluster", ""]);
  assert(words.includes("status") && !words.includes("nodes"), words.join(" "));
  assert((await complete(["llmctl", "--timeout=5s", "no"])).includes("nodes"));
  assertEquals((await llmctl(["completions", "tcsh"])).code, 2);
  const b = await json(["bench", "--list", "--json"]);
  assert((b.benches as string[]).includes("cpu"), JSON.stringify(b));
  const v = await json(["version", "--json"]);
  assertEquals(v.agent, null);
  const tui = await llmctl(["tui"]);
  assertEquals(tui.code, 2, "tui refuses without a terminal");
  assert(tui.stderr.includes("terminal"), tui.stderr);
});

Deno.test("--help of every command and subcommand is meaningful", () => {
  const program = buildProgram();
  const walk = (cmd: Command, path: string[]) => {
    const help = cmd.helpInformation();
    assert(help.startsWith(`Usage: ${[...path].join(" ")}`), help);
    if (path.length > 1) {
      assert(cmd.description().length >= 15, `${path.join(" ")} has a real description`);
    }
    for (const sub of cmd.commands as Command[]) {
      if (sub.name() !== "help") walk(sub, [...path, sub.name()]);
    }
  };
  walk(program as unknown as Command, ["llmctl"]);
  const names = (program.commands as Command[]).map((c) => c.name());
  for (
    const n of [
      "cluster",
      "nodes",
      "models",
      "generate",
      "chat",
      "bench",
      "certs",
      "tui",
      "completions",
      "version",
    ]
  ) assert(names.includes(n), `llmctl ${n} exists`);
});

Deno.test("an agent that answers UNAVAILABLE is quoted, not reported as missing", async () => {
  // Too small a budget for the model: the agent runs, and says there is no placement.
  const agent = await startAgent({ id: "small", model: STORIES, memoryBudget: "1MB" });
  try {
    const r = await llmctl([
      "generate",
      "--endpoint",
      `127.0.0.1:${agent.rpcPort}`,
      "-p",
      "hi",
      "-n",
      "2",
    ]);
    assertEquals(r.code, 1, r.stderr);
    assert(!r.stderr.includes("no agent at"), r.stderr);
    assert(r.stderr.includes(`the agent at 127.0.0.1:${agent.rpcPort} answered`), r.stderr);
    assert(r.stderr.includes("no placement"), r.stderr);
    // The prompt is echoed with the first answer only: before, stdout held "hi" and a terminal
    // showed "hillmctl: the agent at …".
    assertEquals(r.stdout, "");
  } finally {
    await stopAll([agent]);
  }
});
