/**
 * k8s/ as tests see it: each kustomization rendered by `kubectl kustomize` (or read file by file
 * with the `yaml` package where kubectl is missing), and every PromQL expression the manifests
 * hold — KEDA triggers, PrometheusRule alerts, the Grafana dashboard's panel targets.
 */
import { parseAllDocuments } from "yaml";
import { REPO } from "./paths.ts";

/** The kustomizations under k8s/ that users apply. */
export const KUSTOMIZATIONS = ["base", "overlays/autoscaling", "overlays/monitoring"];

/** A rendered Kubernetes object. */
export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  // deno-lint-ignore no-explicit-any
  spec?: any;
  data?: Record<string, string>;
};

/** Whether `kubectl` can be run here. */
export function haveKubectl(): boolean {
  try {
    return new Deno.Command("kubectl", {
      args: ["version", "--client"],
      stdout: "null",
      stderr: "null",
    })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Render one kustomization (relative to k8s/) into its objects. */
export async function render(kustomization: string): Promise<K8sObject[]> {
  const out = await new Deno.Command("kubectl", {
    args: ["kustomize", `${REPO}/k8s/${kustomization}`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `kubectl kustomize k8s/${kustomization} failed: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return parseYaml(new TextDecoder().decode(out.stdout));
}

/** Parse a multi-document YAML stream, refusing any document with errors. */
export function parseYaml(text: string): K8sObject[] {
  return parseAllDocuments(text).map((d) => {
    if (d.errors.length) throw new Error(d.errors.map((e) => e.message).join("; "));
    return d.toJS() as K8sObject;
  }).filter((o) => o !== null);
}

/** A PromQL expression and where it came from. */
export interface PromqlExpr {
  source: string;
  expr: string;
}

/** Every PromQL expression in the given objects (KEDA, PrometheusRule, dashboard ConfigMaps). */
export function promqlExpressions(objects: K8sObject[]): PromqlExpr[] {
  const out: PromqlExpr[] = [];
  for (const o of objects) {
    if (o.kind === "ScaledObject") {
      for (const t of o.spec.triggers ?? []) {
        if (t.type === "prometheus") {
          out.push({
            source: `ScaledObject ${o.metadata.name} trigger ${t.name}`,
            expr: t.metadata.query,
          });
        }
      }
    } else if (o.kind === "PrometheusRule") {
      for (const g of o.spec.groups ?? []) {
        for (const r of g.rules ?? []) {
          out.push({ source: `PrometheusRule ${r.alert ?? r.record}`, expr: String(r.expr) });
        }
      }
    } else if (o.kind === "ConfigMap" && o.metadata.labels?.grafana_dashboard) {
      for (const [file, text] of Object.entries(o.data ?? {})) {
        // deno-lint-ignore no-explicit-any
        const walk = (panels: any[]) => {
          for (const p of panels ?? []) {
            for (const t of p.targets ?? []) {
              if (t.expr) {
                out.push({ source: `dashboard ${file} panel "${p.title}"`, expr: t.expr });
              }
            }
            walk(p.panels);
          }
        };
        walk(JSON.parse(text).panels);
      }
    }
  }
  return out;
}

const KEYWORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "offset",
  "bool",
  "and",
  "or",
  "unless",
  "inf",
  "nan",
]);

/**
 * Metric names a PromQL expression selects: identifiers outside strings, label matchers,
 * ranges and grouping clauses, that are not functions, aggregations or keywords.
 */
export function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names = new Set<string>();
  for (const m of stripped.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const after = stripped.slice(m.index! + m[0].length).trimStart();
    if (after.startsWith("(")) continue; // a function or aggregation
    if (KEYWORDS.has(m[0].toLowerCase())) continue;
    names.add(m[0]);
  }
  return [...names];
}

/** The expression with every comparison against a number removed: what an alert measures. */
export function withoutThresholds(expr: string): string {
  return expr.replace(/\s*(==|!=|>=|<=|>|<)\s*(bool\s+)?-?\d+(\.\d+)?(e[+-]?\d+)?/gi, "");
}

/** Series names in a Prometheus exposition text (histograms show as _bucket/_sum/_count). */
export function exposedNames(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]/.exec(line);
    if (m) out.add(m[1]);
  }
  return out;
}
