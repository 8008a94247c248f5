/**
 * `llmctl models list|deploy|undeploy|inspect` (alias `model`): what the cluster serves and
 * where, and a GGUF file's metadata and tensor table (reading only its index).
 *
 * ```sh
 * llmctl models list
 * llmctl models inspect models/stories260K.gguf --json
 * ```
 */
import { Command } from "@commander-js/extra-typings";
import { typeName } from "../../kernels/quant/types.ts";
import { openModelFile } from "../../model/engine.ts";
import { type GGUFArray, type GGUFValue, GGUFValueType } from "../../model/gguf/mod.ts";
import { CliError, withAgent } from "../client.ts";
import { ExitCode, printJson } from "../common.ts";
import { formatBytes, layerBar, table } from "../format.ts";
import { globals, stateName } from "./cluster_view.ts";

/** Arrays longer than this are summarized rather than printed whole. */
const ARRAY_PREVIEW = 8;

/** Where model distribution is tracked; deploy/undeploy point there until it lands. */
const DISTRIBUTION_PENDING =
  "not available until model distribution lands (cluster/transfer/, the model distribution " +
  "issue); for now start every agent with --model <path> (the same GGUF file on each machine) " +
  "and the cluster places its layers by itself";

/** Build the `models` command group (alias `model`). */
export function modelsCommand() {
  const cmd = new Command("models").alias("model").description(
    "list the models the cluster serves and where; inspect GGUF files",
  );
  cmd.command("list")
    .alias("ls")
    .description("models the cluster serves, with the node and layer range of each stage")
    .option("--json", "print one JSON object: {models: [...]}")
    .action(async (opts, c) => {
      const info = await withAgent(
        globals(c),
        (a) => a.discovery.getClusterInfo({}, a.callOptions),
      );
      const p = info.placement;
      const byModel = new Map<
        string,
        { node: string; from: number; to: number; state: string }[]
      >();
      for (const n of info.nodes) {
        if (!n.hosted) continue;
        const list = byModel.get(n.hosted.model) ?? [];
        list.push({
          node: n.id,
          from: n.hosted.fromLayer,
          to: n.hosted.toLayer,
          state: stateName(n.state),
        });
        byModel.set(n.hosted.model, list);
      }
      if (p && !byModel.has(p.model)) byModel.set(p.model, []);
      const models = [...byModel].map(([model, hosts]) => {
        hosts.sort((a, b) => a.from - b.from);
        const total = p?.model === model ? p.totalLayers : Math.max(0, ...hosts.map((h) => h.to));
        let at = 0;
        for (const h of hosts) if (h.from <= at && h.state === "alive") at = Math.max(at, h.to);
        return {
          model,
          total_layers: total,
          epoch: p?.model === model ? Number(p.epoch) : null,
          ready: total > 0 && at >= total,
          planned: p?.model === model
            ? p.stages.map((s) => ({ node: s.nodeId, from: s.fromLayer, to: s.toLayer }))
            : [],
          hosted: hosts,
        };
      });
      if (opts.json) {
        printJson({ responder: info.responderId, models });
        return;
      }
      if (models.length === 0) {
        console.log(
          "no model is served; start agents with --model <path> (deploy comes with model distribution)",
        );
        return;
      }
      for (const m of models) {
        console.log(
          `${m.model}: ${m.total_layers} layers, ${m.ready ? "ready" : "not ready"}` +
            (m.epoch !== null ? `, placement epoch ${m.epoch}` : ""),
        );
        console.log(table(
          ["node", "layers", "state", "range"],
          m.hosted.map((h) => [
            h.node,
            `[${h.from},${h.to})`,
            h.state,
            layerBar(h.from, h.to, m.total_layers, 32),
          ]),
        ));
      }
    });
  for (
    const [name, what] of [["deploy", "load a model onto the cluster"], [
      "undeploy",
      "remove a model from the cluster",
    ]] as const
  ) {
    cmd.command(name)
      .description(`${what} (not available until model distribution lands)`)
      .argument("[model]", "model file or name")
      .option("--json", "print one JSON object")
      .action((_model, opts) => {
        if (opts.json) printJson({ error: DISTRIBUTION_PENDING });
        throw new CliError(`models ${name}: ${DISTRIBUTION_PENDING}`, ExitCode.failure);
      });
  }
  cmd.command("inspect")
    .description("print a GGUF file's metadata and tensor table (reads only the header and index)")
    .argument("<file>", "GGUF model file")
    .option("--json", "print one JSON object")
    .option("--full", "print arrays whole instead of a preview")
    .action(async (path, opts) => {
      const file = await openModelFile(path);
      try {
        const metadata: Record<string, unknown> = {};
        for (const e of file.metadata.entries()) {
          metadata[e.key] = toJson(e.value, opts.full ?? false);
        }
        const tensors = file.tensors.map((t) => ({
          name: t.name,
          type: typeName(t.type),
          shape: [...t.dims],
          bytes: t.nBytes ?? null,
          offset: t.offset,
        }));
        const totalBytes = file.tensors.reduce((s, t) => s + (t.nBytes ?? 0), 0);
        if (opts.json) {
          printJson({
            path,
            version: file.version,
            alignment: file.alignment,
            data_offset: file.dataOffset,
            file_size: file.fileSize,
            tensor_bytes: totalBytes,
            metadata,
            tensors,
            bytes_read: file.bytesRead,
          });
          return;
        }
        console.log(
          `${path}: GGUF v${file.version}, ${formatBytes(file.fileSize)}, ` +
            `${tensors.length} tensors (${formatBytes(totalBytes)}), data at ${file.dataOffset}`,
        );
        console.log("\nmetadata:");
        console.log(table(
          ["key", "value"],
          Object.entries(metadata).map((
            [k, v],
          ) => [k, typeof v === "string" ? v : JSON.stringify(v)]),
        ));
        console.log("\ntensors:");
        console.log(table(
          ["name", "type", "shape", "bytes"],
          tensors.map((
            t,
          ) => [
            t.name,
            t.type,
            t.shape.join(" × "),
            t.bytes === null ? "?" : formatBytes(t.bytes),
          ]),
        ));
      } finally {
        file.close();
      }
    });
  return cmd;
}

function toJson(v: GGUFValue, full: boolean): unknown {
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (typeof v !== "object") return v;
  const arr = v as GGUFArray;
  const values = Array.from(arr.values as ArrayLike<GGUFValue>);
  if (full || values.length <= ARRAY_PREVIEW) return values.map((x) => toJson(x, full));
  return {
    array: GGUFValueType[arr.itemType].toLowerCase(),
    length: values.length,
    head: values.slice(0, ARRAY_PREVIEW).map((x) => toJson(x, full)),
  };
}
