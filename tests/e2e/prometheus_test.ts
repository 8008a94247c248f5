/**
 * A real Prometheus (Debian's `prometheus`) scrapes 2 real agents while they generate; then its
 * HTTP API answers every KEDA query and every PrometheusRule expression from k8s/ with data, and
 * it has loaded the rules themselves without errors.
 */
import { stringify } from "yaml";
import { assert, assertEquals } from "../support/assert.ts";
import { generate, startCluster, stopAll, waitForPlacement } from "../support/agents.ts";
import { haveKubectl, promqlExpressions, render, withoutThresholds } from "../support/k8s.ts";
import { REPO } from "../support/paths.ts";

function havePrometheus(): boolean {
  try {
    return new Deno.Command("prometheus", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

const ready = havePrometheus() && haveKubectl();
if (!ready) {
  console.log(
    "tests/e2e/prometheus_test.ts: skipped: needs the `prometheus` binary (apt-get install " +
      "prometheus; .ci/run installs it) and kubectl",
  );
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

// deno-lint-ignore no-explicit-any
async function api(base: string, path: string, params: Record<string, string> = {}): Promise<any> {
  const res = await fetch(`${base}/api/v1/${path}?${new URLSearchParams(params)}`);
  const body = await res.json();
  if (body.status !== "success") {
    throw new Error(`${path} ${JSON.stringify(params)}: ${body.errorType}: ${body.error}`);
  }
  return body.data;
}

Deno.test({
  name: "Prometheus scrapes 2 agents: KEDA queries and every alert expression return data",
  ignore: !ready,
  fn: async () => {
    const autoscaling = await render("overlays/autoscaling");
    const monitoring = await render("overlays/monitoring");
    const keda = promqlExpressions(autoscaling).filter((e) => e.source.startsWith("ScaledObject"));
    const rules = promqlExpressions(monitoring).filter((e) =>
      e.source.startsWith("PrometheusRule")
    );
    assertEquals(keda.length, 3);
    assert(rules.length >= 4);

    const dir = await Deno.makeTempDir({ prefix: "dllm-prometheus-" });
    const agents = await startCluster(["p1", "p2"], {
      model: `${REPO}/models/stories260K.gguf`,
      memoryBudget: "1.6MB",
    });
    let prom: Deno.ChildProcess | undefined;
    try {
      // The PrometheusRule's groups as a rule file: Prometheus itself checks them.
      const [rule] = monitoring.filter((o) => o.kind === "PrometheusRule");
      await Deno.writeTextFile(`${dir}/rules.yml`, stringify({ groups: rule.spec.groups }));
      await Deno.writeTextFile(
        `${dir}/prometheus.yml`,
        stringify({
          global: { scrape_interval: "1s", evaluation_interval: "1s" },
          rule_files: [`${dir}/rules.yml`],
          scrape_configs: [{
            job_name: "distributed-llm",
            static_configs: [{ targets: agents.map((a) => `127.0.0.1:${a.metricsPort}`) }],
          }],
        }),
      );
      const port = freePort();
      const base = `http://127.0.0.1:${port}`;
      prom = new Deno.Command("prometheus", {
        args: [
          `--config.file=${dir}/prometheus.yml`,
          `--storage.tsdb.path=${dir}/data`,
          `--web.listen-address=127.0.0.1:${port}`,
          "--log.level=warn",
        ],
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const promLog: string[] = [];
      (async () => {
        for await (const c of prom.stderr.pipeThrough(new TextDecoderStream())) promLog.push(c);
      })();
      await waitFor(
        async () => (await fetch(`${base}/-/ready`)).ok,
        20_000,
        () => `prometheus did not become ready: ${promLog.join("")}`,
      );

      await waitForPlacement(agents[0], 2);
      let generated = 0;
      for (const [i, prompt] of ["Once upon a time", "The cat", "Lily wanted"].entries()) {
        const out = await generate(agents[i % 2], prompt, 24);
        assert(out.tokens.length > 0);
        generated += out.tokens.length;
      }
      // Both targets up, and the scrapes after the generations are in.
      await waitFor(
        async () => {
          const up = await api(base, "query", { query: 'up{job="distributed-llm"} == 1' });
          const r = await api(base, "query", {
            query: "sum(distributed_llm_tokens_generated_total)",
          });
          return up.result.length === 2 && r.result.length === 1 &&
            Number(r.result[0].value[1]) === generated;
        },
        15_000,
        () => "the 2 agents' tokens never reached Prometheus",
        async () =>
          JSON.stringify((await api(base, "targets")).activeTargets.map((
            t: { scrapeUrl: string; health: string; lastError: string },
          ) => [t.scrapeUrl, t.health, t.lastError])),
      );
      await new Promise((r) => setTimeout(r, 2500));

      const empty: string[] = [];
      for (const { source, expr } of [...keda, ...rules]) {
        // The full expression parses and runs; what it measures has data.
        await api(base, "query", { query: expr });
        const measured = withoutThresholds(expr);
        const r = await api(base, "query", { query: measured });
        if (r.result.length === 0) empty.push(`${source}: ${measured}`);
      }
      assertEquals(empty, [], "expressions without data");

      // The KEDA queries measure what happened: 2 agents' CPU, nothing queued or running now.
      const cpu = await api(base, "query", {
        query: keda.find((k) => k.source.endsWith("cpu"))!.expr,
      });
      const v = Number(cpu.result[0].value[1]);
      assert(v >= 0 && v <= 100, `cpu ${v}`);

      // Real values: activations crossed between the agents, gossip probes were timed.
      const scalar = async (query: string) => {
        const r = await api(base, "query", { query });
        assertEquals(r.result.length, 1, query);
        return Number(r.result[0].value[1]);
      };
      assert(await scalar('sum(distributed_llm_activation_bytes_total{direction="in"})') > 0);
      const rtt = await scalar("max(distributed_llm_gossip_probe_rtt_seconds)");
      assert(rtt > 0 && rtt < 1, `probe rtt ${rtt}`);
      assertEquals(
        await scalar("sum(distributed_llm_layers_hosted)"),
        5,
        "stories260K has 5 layers",
      );
      assertEquals(await scalar("sum(distributed_llm_inference_duration_seconds_count)"), 3);

      // Prometheus loaded every alert rule and evaluates it without error.
      await new Promise((r) => setTimeout(r, 1500));
      const loaded = (await api(base, "rules")).groups.flatMap((g: { rules: unknown[] }) =>
        g.rules
      );
      assertEquals(loaded.length, rules.length);
      for (const r of loaded as { name: string; health: string; lastError?: string }[]) {
        assertEquals(r.health, "ok", `${r.name}: ${r.lastError}`);
      }
    } finally {
      try {
        prom?.kill("SIGTERM");
        await prom?.status;
      } catch { /* gone */ }
      await stopAll(agents);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

async function waitFor(
  check: () => Promise<boolean>,
  timeoutMs: number,
  why: () => string,
  detail?: () => Promise<string>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${why()} ${detail ? await detail().catch(String) : ""}`);
}
