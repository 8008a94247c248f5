/**
 * Every PromQL expression in k8s/ (KEDA triggers, alert rules, the Grafana dashboard) selects
 * only metrics a running agent exports — the seed's manifests queried names nobody exported.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { startAgent, stopAll } from "../support/agents.ts";
import {
  exposedNames,
  haveKubectl,
  metricNames,
  type PromqlExpr,
  promqlExpressions,
  render,
  withoutThresholds,
} from "../support/k8s.ts";
import { REPO } from "../support/paths.ts";

/** Series Prometheus makes itself for every target. */
const SYNTHETIC = new Set(["up", "scrape_duration_seconds", "scrape_samples_scraped"]);

Deno.test("metricNames finds selectors, not functions, labels, ranges or keywords", () => {
  assertEquals(
    metricNames(
      'histogram_quantile(0.95, sum by (le, instance) (rate(a_bucket{job="x",phase="decode"}[5m]))) > 1',
    ),
    ["a_bucket"],
  );
  assertEquals(metricNames('up{job="x"} == 0 and on (instance) b > 0'), ["up", "b"]);
  assertEquals(
    withoutThresholds('sum(a{s="free"}) == 0 and sum(b) > 0.5'),
    'sum(a{s="free"}) and sum(b)',
  );
});

Deno.test({
  name: "every metric name used in k8s/ (KEDA, rules, dashboard) is exported by a running agent",
  ignore: !haveKubectl(),
  fn: async () => {
    const exprs: PromqlExpr[] = [
      ...promqlExpressions(await render("overlays/autoscaling")),
      ...promqlExpressions(await render("overlays/monitoring")),
    ];
    assert(exprs.length >= 20, `only ${exprs.length} expressions found`);
    const agent = await startAgent({
      id: "promql",
      model: `${REPO}/models/stories260K.gguf`,
      memoryBudget: "64MB",
    });
    try {
      const text = await (await fetch(`http://127.0.0.1:${agent.metricsPort}/metrics`)).text();
      const exported = exposedNames(text);
      const missing: string[] = [];
      for (const { source, expr } of exprs) {
        const names = metricNames(expr);
        assert(names.length > 0, `${source}: no metric in ${expr}`);
        for (const n of names) {
          if (!exported.has(n) && !SYNTHETIC.has(n)) missing.push(`${source}: ${n}`);
        }
      }
      assertEquals(missing, [], "names queried but not exported");
    } finally {
      await stopAll([agent]);
    }
  },
});
