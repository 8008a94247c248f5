/**
 * `llmctl cluster status|info`: the cluster as one agent sees it (DiscoveryService.GetClusterInfo).
 *
 * ```sh
 * llmctl cluster status              # one screen: members by state, layers placed, stages
 * llmctl cluster info --json         # the whole GetClusterInfo answer (snake_case keys)
 * ```
 */
import { Command } from "@commander-js/extra-typings";
import {
  GetClusterInfoResponseSchema,
  type NodeInfo,
  NodeState,
  PlacementSchema,
} from "../../proto/mod.ts";
import { type StageCandidate, tileChain } from "../../cluster/pipeline/mod.ts";
import { withAgent } from "../client.ts";
import { printJson } from "../common.ts";
import { formatBytes, layerBar, palette, say, table } from "../format.ts";
import {
  globals,
  nodeEndpoint,
  paintState,
  rangeText,
  stateName,
  wireJson,
} from "./cluster_view.ts";

/** Build the `cluster` command group. */
export function clusterCommand() {
  const cluster = new Command("cluster").description(
    "show the cluster: members, capacity and which node runs which layers",
  );
  cluster.command("status")
    .description("summary: members by state, layers placed, the pipeline's stages")
    .option("--json", "print one JSON object")
    .action(async (opts, cmd) => {
      const info = await withAgent(
        globals(cmd),
        (c) => c.discovery.getClusterInfo({}, c.callOptions),
      );
      const m = info.metrics!;
      const p = info.placement;
      const ready = p !== undefined && m.layersTotal > 0 && m.layersPlaced >= m.layersTotal;
      const failed = info.nodes.filter((n) => n.stageError && n.state === NodeState.ALIVE);
      // An agent that places nothing itself (--no-model, or its model undeployed) still sees
      // what the others serve: "none placed" read as if the cluster had no model.
      const elsewhere = p ? null : servedElsewhere(info.nodes, info.responderId);
      if (opts.json) {
        printJson({
          cluster: info.clusterName,
          responder: info.responderId,
          ready,
          nodes: {
            total: m.nodesTotal,
            alive: m.nodesAlive,
            suspect: m.nodesSuspect,
            dead: m.nodesDead,
            left: m.nodesLeft,
          },
          model: p?.model ?? null,
          // Set when this agent places nothing but others serve a whole model; held_elsewhere
          // when they hold only part of one (none serves it now).
          served_elsewhere: elsewhere?.whole
            ? { model: elsewhere.model, stages: elsewhere.stages }
            : null,
          held_elsewhere: elsewhere && !elsewhere.whole
            ? { model: elsewhere.model, stages: elsewhere.stages }
            : null,
          layers: { placed: m.layersPlaced, total: m.layersTotal },
          epoch: p ? Number(p.epoch) : null,
          stages: (p?.stages ?? []).map((s) => ({
            node: s.nodeId,
            from: s.fromLayer,
            to: s.toLayer,
          })),
          replicas_setting: p?.replicasSetting || null,
          // Each pipeline serving the model, with its load as its first stage last gossiped.
          replicas: (p?.replicas ?? []).map((r) => ({
            id: r.id,
            stages: r.stages.map((s) => ({ node: s.nodeId, from: s.fromLayer, to: s.toLayer })),
            sessions: r.sessions,
            queued: r.queued,
            free_slots: r.freeSlots,
            tokens_per_second: r.tokensPerSecond,
          })),
          standby: p?.standby ?? [],
          failed_stages: failed.map((n) => ({ node: n.id, error: n.stageError })),
          // Why the responder found no placement, when it found none.
          placement_error: info.placementError || null,
          memory_budget_bytes: Number(m.memoryBudgetBytes),
          active_requests: m.activeRequests,
        });
        return;
      }
      const c = palette();
      say(
        `cluster ${c.bold(info.clusterName)} (answered by ${info.responderId}): ` +
          `${m.nodesAlive} alive` +
          (m.nodesSuspect ? `, ${c.yellow(`${m.nodesSuspect} suspect`)}` : "") +
          (m.nodesDead ? `, ${c.red(`${m.nodesDead} dead`)}` : ""),
      );
      say(
        `model: ${p?.model ?? "none placed"}` +
          (p ? `  layers ${m.layersPlaced}/${m.layersTotal}  epoch ${p.epoch}` : "") +
          `  budget ${formatBytes(Number(m.memoryBudgetBytes))}` +
          `  ${ready ? c.green("ready") : c.yellow("not ready")}`,
      );
      if (!p && info.placementError) say(c.yellow(`no placement: ${info.placementError}`));
      if (elsewhere) {
        const on = elsewhere.stages.map((s) => `${s.node}[${s.from},${s.to})`).join(" ");
        say(
          elsewhere.whole
            ? `${info.responderId} places no model itself; the cluster serves ${elsewhere.model} ` +
              `on ${on}: ${info.responderId} forwards requests there (or send them to one of them)`
            : `${info.responderId} places no model itself; agents hold layers of ` +
              `${elsewhere.model} on ${on}, not the whole model: none serves it now`,
        );
      }
      for (const n of failed) {
        say(c.red(`stage failed on ${n.id}: ${n.stageError} (left the placement)`));
      }
      if (p && p.replicas.length > 1) {
        say(
          `\n${p.replicas.length} replicas (--replicas ${p.replicasSetting || "1"})` +
            (p.standby.length ? `; standby: ${p.standby.join(", ")}` : ""),
        );
        say(table(
          ["replica", "stages", "sessions", "queued", "free", "tok/s"],
          p.replicas.map((r) => [
            r.id,
            r.stages.map((s) => `${s.nodeId}[${s.fromLayer},${s.toLayer})`).join(" → "),
            String(r.sessions),
            String(r.queued),
            String(r.freeSlots),
            r.tokensPerSecond.toFixed(1),
          ]),
        ));
      } else if (p && p.stages.length) {
        say("");
        say(table(
          ["stage", "node", "layers", "placement"],
          p.stages.map((s, i) => [
            String(i),
            s.nodeId,
            `[${s.fromLayer},${s.toLayer})`,
            layerBar(s.fromLayer, s.toLayer, p.totalLayers, 32),
          ]),
        ));
      }
    });
  cluster.command("info")
    .description("members with their resources, totals and the placement")
    .option("--all", "also list dead and departed members")
    .option("--json", "print the GetClusterInfo answer as JSON (snake_case keys, numbers)")
    .action(async (opts, cmd) => {
      const info = await withAgent(
        globals(cmd),
        (c) => c.discovery.getClusterInfo({ includeDeparted: opts.all ?? false }, c.callOptions),
      );
      if (opts.json) {
        printJson(wireJson(GetClusterInfoResponseSchema, info));
        return;
      }
      const m = info.metrics!;
      say(`cluster ${info.clusterName}, answered by ${info.responderId}`);
      say(
        `nodes ${m.nodesTotal} (alive ${m.nodesAlive}, suspect ${m.nodesSuspect}, dead ` +
          `${m.nodesDead}, left ${m.nodesLeft}); cores ${m.cpuCoresTotal}; budget ` +
          `${formatBytes(Number(m.memoryBudgetBytes))}; layers ${m.layersPlaced}/${m.layersTotal}` +
          `; requests ${m.activeRequests}; tokens ${m.tokensGeneratedTotal}`,
      );
      say("");
      say(table(
        ["id", "state", "endpoint", "backend", "layers", "budget", "gflops", "version"],
        info.nodes.map((n) => [
          n.id,
          stateName(n.state),
          nodeEndpoint(n),
          n.backend,
          rangeText(n),
          formatBytes(Number(n.resources?.memoryBudgetBytes ?? 0n)),
          n.calibrationGflops.toFixed(2),
          n.version,
        ]),
        (col, cell, padded) => (col === 1 ? paintState(cell, padded) : padded),
      ));
      if (info.placement) {
        const p = info.placement;
        say(`\nplacement of ${p.model} (epoch ${p.epoch}):`);
        const replicas = p.replicas.length ? p.replicas : [{ id: "", stages: p.stages }];
        for (const r of replicas) {
          if (replicas.length > 1) say(`  replica ${r.id}:`);
          for (const s of r.stages) {
            say(
              `  ${layerBar(s.fromLayer, s.toLayer, p.totalLayers, 40)}  ${s.nodeId} ` +
                `[${s.fromLayer},${s.toLayer})`,
            );
          }
        }
        if (p.standby.length) say(`  standby: ${p.standby.join(", ")}`);
      }
      if (info.nodes.some((n) => n.state === NodeState.SUSPECT)) {
        say("\nsuspect nodes missed probes; gossip declares them dead unless they answer.");
      }
    });
  cluster.command("replan")
    .description("re-plan the placement now (each agent plans the same from the gossip view)")
    .option("--model <name>", "model to re-plan (default: the served one)")
    .option("--dry-run", "only show the placement a re-plan would give")
    .option("--json", "print one JSON object: {message, placement}")
    .action(async (opts, cmd) => {
      const res = await withAgent(globals(cmd), (c) =>
        c.cluster.executeCommand({
          command: { case: "replan", value: { model: opts.model ?? "" } },
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
      for (const s of res.placement?.stages ?? []) {
        say(`  ${s.nodeId} [${s.fromLayer},${s.toLayer})`);
      }
    });
  return cluster;
}

/**
 * What other agents serve when the responder places nothing: the model with the most layers
 * held by live agents other than the responder, the ranges that tile it from layer 0 (as a head
 * tiles a chain: pipeline tileChain), and whether they reach its last layer (known when the
 * responder knows the model; else the furthest layer any holds). Null when the responder holds layers itself (its placement error says
 * what is missing) or no other agent holds any.
 */
export function servedElsewhere(
  nodes: readonly NodeInfo[],
  responder: string,
): { model: string; whole: boolean; stages: { node: string; from: number; to: number }[] } | null {
  const holds = (n: NodeInfo) =>
    n.state === NodeState.ALIVE && !!n.hosted && n.hosted.toLayer > n.hosted.fromLayer;
  if (nodes.some((n) => n.id === responder && holds(n))) return null;
  const byModel = new Map<string, NodeInfo[]>();
  for (const n of nodes.filter(holds)) {
    const list = byModel.get(n.hosted!.model) ?? [];
    list.push(n);
    byModel.set(n.hosted!.model, list);
  }
  let best: ReturnType<typeof servedElsewhere> = null;
  let bestHeld = 0;
  for (const [model, hosts] of byModel) {
    const held = hosts.reduce((n, h) => n + h.hosted!.toLayer - h.hosted!.fromLayer, 0);
    const ranges: StageCandidate[] = hosts.map((n) => ({
      id: n.id,
      status: "alive",
      model,
      from: n.hosted!.fromLayer,
      to: n.hosted!.toLayer,
    }));
    // The model's length where the responder knows it; else the furthest layer any one holds.
    const total = Math.max(...hosts.map((n) => n.hosted!.totalLayers));
    const chain = tileChain(
      ranges,
      model,
      total || Math.max(...ranges.map((r) => r.to)),
      new Set(),
    );
    const whole = Array.isArray(chain);
    const shown = (whole ? chain : ranges.toSorted((a, b) => a.from - b.from))
      .map((r) => ({ node: r.id, from: r.from, to: r.to }));
    if (!best || (whole && !best.whole) || (whole === best.whole && held > bestHeld)) {
      best = { model, whole, stages: shown };
      bestHeld = held;
    }
  }
  return best;
}
