/**
 * k8s/: every kustomization renders with `kubectl kustomize`, every rendered object validates
 * against its model (kubernetes-models, KEDA, prometheus-operator, VPA from its CRD), and the
 * settings the issue promises are really there (resources, probes, security, network policy).
 */
import * as apps from "kubernetes-models/apps/v1";
import * as core from "kubernetes-models/v1";
import * as networking from "kubernetes-models/networking.k8s.io/v1";
import * as rbac from "kubernetes-models/rbac.authorization.k8s.io/v1";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import { VerticalPodAutoscaler } from "./vpa_model.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { REPO } from "../support/paths.ts";
import {
  haveKubectl,
  type K8sObject,
  KUSTOMIZATIONS,
  promqlExpressions,
  render,
} from "../support/k8s.ts";

// deno-lint-ignore no-explicit-any
type ModelClass = new (data: any) => { validate(): void };

/** The model of every kind k8s/ may hold, by "apiVersion/kind". */
const MODELS: Record<string, ModelClass> = {
  "v1/Namespace": core.Namespace,
  "v1/ServiceAccount": core.ServiceAccount,
  "v1/ConfigMap": core.ConfigMap,
  "v1/Service": core.Service,
  "apps/v1/DaemonSet": apps.DaemonSet,
  "apps/v1/StatefulSet": apps.StatefulSet,
  "rbac.authorization.k8s.io/v1/Role": rbac.Role,
  "rbac.authorization.k8s.io/v1/RoleBinding": rbac.RoleBinding,
  "networking.k8s.io/v1/NetworkPolicy": networking.NetworkPolicy,
  "keda.sh/v1alpha1/ScaledObject": keda.ScaledObject,
  "monitoring.coreos.com/v1/ServiceMonitor": monitoring.ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": monitoring.PrometheusRule,
  "autoscaling.k8s.io/v1/VerticalPodAutoscaler": VerticalPodAutoscaler,
};

const kubectl = haveKubectl();
const rendered = new Map<string, K8sObject[]>();
async function objects(k: string): Promise<K8sObject[]> {
  if (!rendered.has(k)) rendered.set(k, await render(k));
  return rendered.get(k)!;
}
/** JSON with object keys sorted, to compare rendered objects whatever their key order. */
function canonical(x: unknown): string {
  if (Array.isArray(x)) return `[${x.map(canonical).join(",")}]`;
  if (typeof x !== "object" || x === null) return JSON.stringify(x);
  const o = x as Record<string, unknown>;
  return `{${
    Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(",")
  }}`;
}
const find = (objs: K8sObject[], kind: string, name?: string) =>
  objs.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));

for (const k of KUSTOMIZATIONS) {
  Deno.test({
    name: `k8s/${k}: renders with kubectl kustomize and every object validates`,
    ignore: !kubectl,
    fn: async () => {
      const objs = await objects(k);
      assert(objs.length > 0, "rendered nothing");
      for (const o of objs) {
        const model = MODELS[`${o.apiVersion}/${o.kind}`];
        assert(model, `no model for ${o.apiVersion} ${o.kind} (${o.metadata.name})`);
        try {
          new model(o).validate();
        } catch (e) {
          throw new Error(`${o.kind} ${o.metadata.name} in k8s/${k}: ${(e as Error).message}`);
        }
        if (o.kind !== "Namespace") assertEquals(o.metadata.namespace, "distributed-llm", o.kind);
      }
    },
  });
}

if (!kubectl) console.log("tests/k8s: kubectl is missing here; rendering tests are skipped");

Deno.test("the models refuse broken objects (the validation is not a no-op)", () => {
  const broken: [ModelClass, unknown][] = [
    [apps.DaemonSet, { metadata: { name: "x" }, spec: { template: {} } }],
    [keda.ScaledObject, { metadata: { name: "x" }, spec: { triggers: [] } }],
    [monitoring.PrometheusRule, { metadata: { name: "x" }, spec: { groups: [{ rules: [] }] } }],
    [VerticalPodAutoscaler, {
      apiVersion: "autoscaling.k8s.io/v1",
      kind: "VerticalPodAutoscaler",
      metadata: { name: "x" },
      spec: {
        targetRef: { kind: "StatefulSet", name: "a" },
        updatePolicy: { updateMode: "Sometimes" },
      },
    }],
  ];
  for (const [model, data] of broken) {
    let threw = false;
    try {
      new model(data).validate();
    } catch {
      threw = true;
    }
    assert(threw, `${model.name} accepted ${JSON.stringify(data)}`);
  }
});

Deno.test({
  name: "k8s/base: DaemonSet resources, /health probes, non-root read-only, secrets by reference",
  ignore: !kubectl,
  fn: async () => {
    const objs = await objects("base");
    const [ds] = find(objs, "DaemonSet", "distributed-llm-agent");
    const pod = ds.spec.template.spec;
    const c = pod.containers[0];
    assertEquals(c.resources, {
      requests: { cpu: "1", memory: "2Gi" },
      limits: { cpu: "4", memory: "8Gi" },
    });
    for (const p of ["livenessProbe", "readinessProbe", "startupProbe"]) {
      assert(c[p].httpGet.path.startsWith("/health"), `${p}: ${c[p].httpGet.path}`);
      assertEquals(c[p].httpGet.port, "metrics");
    }
    assertEquals(pod.securityContext.runAsNonRoot, true);
    assertEquals(c.securityContext.readOnlyRootFilesystem, true);
    assertEquals(c.securityContext.allowPrivilegeEscalation, false);
    assertEquals(c.securityContext.capabilities.drop, ["ALL"]);
    assertEquals(pod.automountServiceAccountToken, false);
    const keys = c.env.find((e: { name: string }) => e.name === "DLLM_GOSSIP_KEYS");
    assertEquals(keys.valueFrom.secretKeyRef.name, "distributed-llm-gossip");
    const tls = pod.volumes.find((v: { name: string }) => v.name === "tls");
    assertEquals(tls.secret.secretName, "distributed-llm-tls");
    assertEquals(find(objs, "Secret").length, 0, "secrets are referenced, never shipped");
    // The ConfigMap is a config file the agent accepts, and points TLS at the mounted secret.
    const [cm] = find(objs, "ConfigMap", "distributed-llm-config");
    const cfg = JSON.parse(cm.data!["agent.json"]);
    assertEquals(cfg.tlsCa, "/etc/distributed-llm/tls/ca.crt");
    // Pods share one certificate named "agent" (k8s/README.md), and dial each other at pod IPs
    // no certificate lists: peers are checked against that name.
    assertEquals(cfg.tlsPeerName, "agent");
    assertEquals(cfg.metricsPort, 9090);
    assert(String(cfg.seeds[0]).startsWith("distributed-llm-peers."), cfg.seeds[0]);
    const [peers] = find(objs, "Service", "distributed-llm-peers");
    assertEquals(peers.spec.clusterIP, "None");
    assertEquals(peers.spec.publishNotReadyAddresses, true);
    assertEquals(find(objs, "Service", "distributed-llm-api")[0].spec.ports[0].port, 8080);
  },
});

Deno.test({
  name: "k8s/base: the agent accepts the ConfigMap's config file",
  fn: async () => {
    const { resolveConfig, settingsFromFile } = await import("../../cluster/agent_config.ts");
    const { budgetFromMemoryLimit } = await import("../../cli/agent.ts");
    const { parseYaml } = await import("../support/k8s.ts");
    const [cm] = parseYaml(
      await Deno.readTextFile(new URL("../../k8s/base/configmap.yaml", import.meta.url)),
    );
    const file = await Deno.makeTempFile({ suffix: ".json" });
    try {
      await Deno.writeTextFile(file, cm.data!["agent.json"]);
      // The pod's env: DLLM_MEMORY_LIMIT from limits.memory (8Gi) gives the default budget.
      const limit = budgetFromMemoryLimit({ DLLM_MEMORY_LIMIT: String(8 * 1024 ** 3) });
      // DLLM_GOSSIP_KEYS comes from the distributed-llm-gossip Secret (required: an agent on
      // 0.0.0.0 refuses to gossip in plaintext).
      const gossipKeys = [btoa(String.fromCharCode(...new Uint8Array(32).fill(1)))];
      const cfg = resolveConfig([
        ["env", { nodeId: "node-1", advertiseAddress: "10.0.0.5", gossipKeys }],
        ["config file", await settingsFromFile(file)],
        ["default", { memoryBudget: limit }],
      ]);
      assertEquals(cfg.bind, "0.0.0.0");
      assertEquals(cfg.memoryBudget, 6 * 1024 ** 3);
    } finally {
      await Deno.remove(file);
    }
  },
});

Deno.test({
  name:
    "k8s/base: NetworkPolicy: gossip/RPC between agents, RPC from client pods, metrics from monitoring, API from all",
  ignore: !kubectl,
  fn: async () => {
    const [np] = find(await objects("base"), "NetworkPolicy");
    const rule = (port: number) =>
      np.spec.ingress.filter((r: { ports: { port: number }[] }) =>
        r.ports.some((p) => p.port === port)
      );
    for (const port of [7946, 7950]) {
      const [r] = rule(port);
      assertEquals(r.from, [{ podSelector: np.spec.podSelector }], `port ${port}`);
    }
    // A labelled llmctl/TUI pod reaches RPC (and nothing else).
    const client = {
      namespaceSelector: {},
      podSelector: {
        matchLabels: {
          "app.kubernetes.io/name": "distributed-llm",
          "app.kubernetes.io/component": "client",
        },
      },
    };
    const clientRules = np.spec.ingress.filter((r: { from: unknown[] }) =>
      r.from.some((f) => canonical(f) === canonical(client))
    );
    assertEquals(clientRules.length, 1);
    assertEquals(clientRules[0].ports, [{ port: 7950, protocol: "TCP" }]);
    assertEquals(rule(9090)[0].from, [{
      namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "monitoring" } },
    }]);
    assertEquals(rule(8080)[0].from, [{ namespaceSelector: {} }]);
  },
});

Deno.test({
  name: "k8s/overlays/autoscaling: StatefulSet instead of DaemonSet, VPA bounds, KEDA triggers",
  ignore: !kubectl,
  fn: async () => {
    const objs = await objects("overlays/autoscaling");
    assertEquals(find(objs, "DaemonSet").length, 0);
    const [sts] = find(objs, "StatefulSet", "distributed-llm-agent");
    assertEquals(sts.spec.serviceName, "distributed-llm-peers");
    const [vpa] = find(objs, "VerticalPodAutoscaler");
    assertEquals(vpa.spec.targetRef.kind, "StatefulSet");
    assertEquals(vpa.spec.updatePolicy.updateMode, "Auto");
    const policy = vpa.spec.resourcePolicy.containerPolicies[0];
    assertEquals(policy.minAllowed, { cpu: "500m", memory: "1Gi" });
    assertEquals(policy.maxAllowed, { cpu: "8", memory: "32Gi" });
    const [so] = find(objs, "ScaledObject");
    assertEquals(so.spec.scaleTargetRef.kind, "StatefulSet");
    const triggers = Object.fromEntries(
      so.spec.triggers.map((t: { name: string; metadata: Record<string, string> }) => [
        t.name,
        t.metadata,
      ]),
    );
    assertEquals(Object.keys(triggers).sort(), ["active-requests", "cpu", "queue-depth"]);
    assertEquals(triggers.cpu.threshold, "70");
    assert(triggers.cpu.query.includes("distributed_llm_node_cpu_percent"));
    assert(triggers["queue-depth"].query.includes("distributed_llm_queue_depth"));
    assert(triggers["active-requests"].query.includes("distributed_llm_requests_active"));
  },
});

Deno.test({
  name: "k8s/overlays/monitoring: ServiceMonitor, the four alerts, a dashboard with every section",
  ignore: !kubectl,
  fn: async () => {
    const objs = await objects("overlays/monitoring");
    const [sm] = find(objs, "ServiceMonitor");
    assertEquals(sm.spec.endpoints[0].port, "metrics");
    const alerts = find(objs, "PrometheusRule")[0].spec.groups.flatMap((g: { rules: unknown[] }) =>
      g.rules
    ).map((r: { alert: string }) => r.alert);
    for (
      const a of [
        "DistributedLLMAgentDown",
        "DistributedLLMHighLatency",
        "DistributedLLMQueueSaturated",
        "DistributedLLMGossipFlapping",
      ]
    ) assert(alerts.includes(a), `missing alert ${a}`);
    const [dash] = find(objs, "ConfigMap", "distributed-llm-dashboard");
    const board = JSON.parse(dash.data!["distributed-llm.json"]);
    const titles = board.panels.map((p: { title: string }) => p.title);
    for (const t of ["Cluster overview", "Per node", "Per stage latency", "Tokens / s"]) {
      assert(titles.includes(t), `dashboard lacks "${t}"`);
    }
    assert(promqlExpressions(objs).length >= 20, "the dashboard and rules hold the queries");
  },
});

/** The workloads of k8s/ as written (parsed YAML; no kubectl needed). */
async function workloads(): Promise<{ file: string; spec: Record<string, unknown> }[]> {
  const { parseAllDocuments } = await import("yaml");
  const out = [];
  for (const file of ["k8s/base/daemonset.yaml", "k8s/overlays/autoscaling/statefulset.yaml"]) {
    const text = await Deno.readTextFile(`${REPO}/${file}`);
    for (const doc of parseAllDocuments(text)) {
      const o = doc.toJS() as { kind?: string; spec?: Record<string, unknown> };
      if (o?.kind === "DaemonSet" || o?.kind === "StatefulSet") out.push({ file, spec: o.spec! });
    }
  }
  return out;
}

// deno-lint-ignore no-explicit-any
const podSpec = (w: { spec: Record<string, unknown> }) => (w.spec as any).template.spec;

Deno.test("k8s runs the image the Dockerfile builds", async () => {
  const dockerfile = await Deno.readTextFile(`${REPO}/Dockerfile`);
  const built = /docker build -t (\S+) \./.exec(dockerfile)?.[1];
  assert(built, "the Dockerfile does not say which tag it builds");
  const ws = await workloads();
  assertEquals(ws.length, 2);
  for (const w of ws) {
    for (const c of podSpec(w).containers) assertEquals(c.image, built, w.file);
  }
});

Deno.test("the model cache is a writable volume under readOnlyRootFilesystem", async () => {
  const { parse } = await import("yaml");
  const cm = parse(await Deno.readTextFile(`${REPO}/k8s/base/configmap.yaml`));
  const cacheDir = JSON.parse(cm.data["agent.json"]).cacheDir as string;
  assert(cacheDir, "agent.json sets no cacheDir (the default is under the read-only home)");
  for (const w of await workloads()) {
    for (const c of podSpec(w).containers) {
      if (!c.securityContext?.readOnlyRootFilesystem) continue;
      const mount = (c.volumeMounts as { name: string; mountPath: string; readOnly?: boolean }[])
        .find((m) => cacheDir === m.mountPath || cacheDir.startsWith(`${m.mountPath}/`));
      assert(mount && !mount.readOnly, `${w.file}: ${cacheDir} is not on a writable volume`);
      const volume = podSpec(w).volumes.find((v: { name: string }) => v.name === mount.name);
      assert(volume?.emptyDir || volume?.persistentVolumeClaim, `${w.file}: ${mount.name}`);
    }
  }
});

Deno.test("KEDA's queries need no label that only the monitoring overlay creates", async () => {
  const { parseAllDocuments } = await import("yaml");
  const text = await Deno.readTextFile(`${REPO}/k8s/overlays/autoscaling/scaledobject.yaml`);
  const so = parseAllDocuments(text).map((d) => d.toJS()).find((o) => o?.kind === "ScaledObject");
  const queries = (so.spec.triggers as { metadata: { query?: string } }[])
    .map((t) => t.metadata.query).filter((q): q is string => q !== undefined);
  assertEquals(queries.length, 3);
  for (const q of queries) {
    assert(q.includes("distributed_llm_"), q);
    // job/service/endpoint come from the ServiceMonitor's scrape; any other scraper lacks them.
    assert(!/\b(job|service|endpoint)\s*=/.test(q), `query depends on a scrape label: ${q}`);
  }
});

Deno.test("the memory budget is derived from the container's limit, so the VPA cannot contradict it", async () => {
  const { parse } = await import("yaml");
  const cm = parse(await Deno.readTextFile(`${REPO}/k8s/base/configmap.yaml`));
  const config = JSON.parse(cm.data["agent.json"]);
  // A fixed budget (it was 6GiB) outlives a limit the VPA lowers (minAllowed 1Gi → limit 4Gi).
  assertEquals("memoryBudget" in config, false, "agent.json fixes memoryBudget");
  for (const w of await workloads()) {
    for (const c of podSpec(w).containers) {
      const env = c.env as { name: string; valueFrom?: Record<string, Record<string, string>> }[];
      assert(!env.some((e) => e.name === "DLLM_MEMORY_BUDGET"), `${w.file}: a fixed budget`);
      const limit = env.find((e) => e.name === "DLLM_MEMORY_LIMIT");
      assertEquals(limit?.valueFrom?.resourceFieldRef, {
        containerName: c.name,
        resource: "limits.memory",
      }, w.file);
      assert(c.resources.limits.memory, `${w.file}: no memory limit to derive the budget from`);
    }
  }
  const { parseAllDocuments } = await import("yaml");
  const vpaText = await Deno.readTextFile(`${REPO}/k8s/overlays/autoscaling/vpa.yaml`);
  const vpa = parseAllDocuments(vpaText).map((d) => d.toJS()).find((o) =>
    o?.kind ===
      "VerticalPodAutoscaler"
  );
  for (const p of vpa.spec.resourcePolicy.containerPolicies) {
    // RequestsOnly would leave the limit (and the budget) where the manifest put it.
    assert((p.controlledValues ?? "RequestsAndLimits") === "RequestsAndLimits", p.containerName);
  }
});

Deno.test("the agent's default budget is DLLM_MEMORY_LIMIT x DLLM_MEMORY_LIMIT_FRACTION", async () => {
  const { budgetFromMemoryLimit } = await import("../../cli/agent.ts");
  assertEquals(budgetFromMemoryLimit({}), undefined);
  // What the downward API gives for limits.memory 8Gi: bytes.
  assertEquals(budgetFromMemoryLimit({ DLLM_MEMORY_LIMIT: "8589934592" }), 6 * 2 ** 30);
  assertEquals(
    budgetFromMemoryLimit({ DLLM_MEMORY_LIMIT: "4Gi", DLLM_MEMORY_LIMIT_FRACTION: "0.5" }),
    2 * 2 ** 30,
  );
  const bads: Record<string, string>[] = [
    { DLLM_MEMORY_LIMIT: "lots" },
    { DLLM_MEMORY_LIMIT: "1Gi", DLLM_MEMORY_LIMIT_FRACTION: "1.5" },
  ];
  for (const bad of bads) {
    let threw = false;
    try {
      budgetFromMemoryLimit(bad);
    } catch {
      threw = true;
    }
    assert(threw, JSON.stringify(bad));
  }
});
