/**
 * `llmctl nodes list|describe <id>|drain <id>`: the members, one member in detail (asking it
 * directly for health, resources and load), and draining a member so its layers move elsewhere.
 *
 * ```sh
 * llmctl nodes list
 * llmctl nodes describe b --json
 * llmctl nodes drain b --dry-run
 * ```
 */
import { Argument, Command } from "@commander-js/extra-typings";
import { LOG_LEVELS } from "../../cluster/events/log_level.ts";
import {
  GetMetricsResponseSchema,
  GetResourcesResponseSchema,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
  NodeInfoSchema,
  NodeState,
  PlacementSchema,
} from "../../proto/mod.ts";
import { CliError, connect, withAgent } from "../client.ts";
import { printJson } from "../common.ts";
import { formatBytes, formatDuration, say, table } from "../format.ts";
import {
  globals,
  nodeEndpoint,
  paintState,
  rangeText,
  stateName,
  wireJson,
} from "./cluster_view.ts";

/** Build the `nodes` command group. */
export function nodesCommand() {
  const nodes = new Command("nodes").alias("node").description(
    "list, inspect and drain the cluster's members",
  );
  nodes.command("list")
    .alias("ls")
    .description("members with state, endpoint, backend, hosted layers and memory budget")
    .option(
      "--all",
      "also list dead and departed members (for the agents' --departed-retention, 10m by " +
        "default), with since when each is in its state",
    )
    .option("--json", "print one JSON object: {responder, nodes: [NodeInfo]}")
    .action(async (opts, cmd) => {
      const info = await withAgent(
        globals(cmd),
        (c) => c.discovery.getClusterInfo({ includeDeparted: opts.all ?? false }, c.callOptions),
      );
      if (opts.json) {
        printJson({
          responder: info.responderId,
          nodes: info.nodes.map((n) => wireJson(NodeInfoSchema, n)),
        });
        return;
      }
      if (info.nodes.length === 0) {
        say("no members (the agent has not joined anyone yet)");
        return;
      }
      // With --all: since when each member is in its state (when a dead one died).
      const now = Date.now();
      const since = (n: (typeof info.nodes)[number]) => {
        const at = Number(n.stateChangedUnixMs);
        return at > 0 ? `${formatDuration(Math.max(0, now - at))} ago` : "";
      };
      say(table(
        [
          "id",
          "state",
          ...(opts.all ? ["since"] : []),
          "endpoint",
          "backend",
          "adapter",
          "layers",
          "budget",
        ],
        info.nodes.map((n) => [
          n.id + (n.id === info.responderId ? " *" : ""),
          stateName(n.state),
          ...(opts.all ? [since(n)] : []),
          nodeEndpoint(n),
          n.backend,
          n.adapter.length > 28 ? n.adapter.slice(0, 27) + "…" : n.adapter,
          rangeText(n),
          formatBytes(Number(n.resources?.memoryBudgetBytes ?? 0n)),
        ]),
        (col, cell, padded) => (col === 1 ? paintState(cell, padded) : padded),
      ));
    });
  nodes.command("describe")
    .alias("show")
    .description("one member in detail: gossip view plus its own health, resources and load")
    .argument("<id>", "node id (see `llmctl nodes list`)")
    .option("--json", "print one JSON object: {node, health, resources, metrics}")
    .action(async (id, opts, cmd) => {
      const g = globals(cmd);
      const info = await withAgent(
        g,
        (c) => c.discovery.getClusterInfo({ includeDeparted: true }, c.callOptions),
      );
      const node = info.nodes.find((n) => n.id === id);
      if (!node) {
        throw new CliError(
          `no node "${id}" in the cluster; known: ${
            info.nodes.map((n) => n.id).join(", ") || "none"
          }`,
        );
      }
      let health, resources, metrics;
      let error: string | undefined;
      if (node.state === NodeState.ALIVE || node.state === NodeState.SUSPECT) {
        const direct = await connect(g, nodeEndpoint(node), node.id);
        try {
          [health, resources, metrics] = await direct.call((c) =>
            Promise.all([
              c.node.healthCheck({}, c.callOptions),
              c.node.getResources({}, c.callOptions),
              c.node.getMetrics({}, c.callOptions),
            ])
          );
        } catch (e) {
          error = (e as Error).message;
        } finally {
          direct.close();
        }
      }
      if (opts.json) {
        printJson({
          node: wireJson(NodeInfoSchema, node),
          health: health ? wireJson(HealthCheckResponseSchema, health) : null,
          resources: resources ? wireJson(GetResourcesResponseSchema, resources) : null,
          metrics: metrics ? wireJson(GetMetricsResponseSchema, metrics) : null,
          error: error ?? null,
        });
        return;
      }
      const rows: [string, string][] = [
        ["id", node.id],
        ["state", paintState(stateName(node.state))],
        ["endpoint", nodeEndpoint(node)],
        ["gossip port", String(node.gossipPort)],
        ["version", node.version],
        ["backend", `${node.backend} (${node.adapter})`],
        ["calibration", `${node.calibrationGflops.toFixed(2)} GFLOP/s`],
        [
          "layers",
          node.hosted
            ? `${rangeText(node)} of ${node.hosted.model}`
            : node.drained
            ? "none (drained: its layers moved; `llmctl models deploy` offers the model again)"
            : "none",
        ],
        ["memory budget", formatBytes(Number(node.resources?.memoryBudgetBytes ?? 0n))],
      ];
      if (health) {
        rows.push([
          "health",
          health.status === HealthCheckResponse_ServingStatus.SERVING
            ? "serving"
            : `not serving: ${health.detail}`,
        ]);
        rows.push(["uptime", formatDuration(health.uptimeSeconds * 1000)]);
      }
      const r = resources?.resources;
      if (r) {
        rows.push(["cpu cores", `${r.cpuCores} (${r.threads} threads)`]);
        rows.push([
          "memory",
          `${formatBytes(Number(r.memoryAvailableBytes))} free of ${
            formatBytes(Number(r.memoryTotalBytes))
          }`,
        ]);
      }
      const m = metrics?.metrics;
      if (m) {
        rows.push(["cpu", `${m.cpuPercent.toFixed(1)} %  load ${m.loadAverage1m.toFixed(2)}`]);
        rows.push(["process rss", formatBytes(Number(m.processResidentBytes))]);
        rows.push(["sessions", String(m.activeSessions)]);
        rows.push(["requests", `${m.activeRequests} active, ${m.tokensGeneratedTotal} tokens`]);
        rows.push(["frames", String(m.framesProcessedTotal)]);
      }
      if (error) rows.push(["unreachable", error]);
      const w = Math.max(...rows.map(([k]) => k.length));
      for (const [k, v] of rows) say(`${k.padEnd(w)}  ${v}`);
    });
  nodes.command("drain")
    .description(
      "stop placing layers on a node: it withdraws its offer and the cluster re-plans without it " +
        "(restart the agent to undo)",
    )
    .argument("<id>", "node id")
    .option("--dry-run", "only say where the layers would go")
    .option("--json", "print one JSON object: {message, placement}")
    .action(async (id, opts, cmd) => {
      const res = await withAgent(globals(cmd), (c) =>
        c.cluster.executeCommand({
          command: { case: "drainNode", value: { nodeId: id } },
          dryRun: opts.dryRun ?? false,
        }, c.callOptions));
      if (opts.json) {
        printJson({
          message: res.message,
          placement: res.placement ? wireJson(PlacementSchema, res.placement) : null,
        });
        return;
      }
      say(res.message);
    });
  nodes.command("log-level")
    .description("change a node's log level at run time (debug, info, warn, error)")
    .argument("<id>", "node id")
    // Checked here, so a typo is a usage error (exit 2) before any agent is asked.
    .addArgument(new Argument("<level>", "the new level").choices(LOG_LEVELS))
    .option("--json", "print one JSON object: {message}")
    .action(async (id, level, opts, cmd) => {
      const res = await withAgent(globals(cmd), (c) =>
        c.cluster.executeCommand({
          command: { case: "setLogLevel", value: { nodeId: id, level } },
        }, c.callOptions));
      if (opts.json) printJson({ message: res.message });
      else say(res.message);
    });
  return nodes;
}
