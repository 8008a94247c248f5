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
import { formatModelSummary, summarizeModel } from "../../model/config.ts";
import { tokenizerFromMetadata } from "../../model/tokenizer/mod.ts";
import { isAbsolute, resolve } from "node:path";
import { parseBytes } from "../../cluster/agent_config.ts";
import { type FileServer, startFileServer } from "../../cluster/transfer/mod.ts";
import { type DeployResponse, type TransferProgress, TransferState } from "../../proto/mod.ts";
import { CliError, connect, rpcError, withAgent } from "../client.ts";
import { progressJson, TransferProgressView, transferStateName } from "../progress.ts";
import { ExitCode, printJson } from "../common.ts";
import { formatBytes, layerBar, say, table } from "../format.ts";
import { globals, nodeEndpoint, stateName } from "./cluster_view.ts";
import { NodeState } from "../../proto/mod.ts";
import { isHubReference } from "../../cluster/hub/mod.ts";
import { defaultCacheDir } from "../../cluster/transfer/mod.ts";
import { localModelPath, pullHubModel } from "./model_options.ts";

/** Arrays longer than this are summarized rather than printed whole. */
const ARRAY_PREVIEW = 8;

/** Build the `models` command group (alias `model`). */
export function modelsCommand() {
  const cmd = new Command("models").alias("model").description(
    "list the models the cluster serves and where; pull models from the Hugging Face Hub; " +
      "inspect GGUF files",
  );
  cmd.command("pull")
    .description(
      "download a GGUF from the Hugging Face Hub into the model cache (resumable, sha256-checked) " +
        "and print its local path; a cached copy is reused",
    )
    .argument(
      "<ref>",
      "hf:owner/repo:QUANT (the repo's GGUF with that quant tag, e.g. Q4_K_M), " +
        "hf:owner/repo/path/file.gguf or hf:owner/repo; @revision at the end picks a branch, " +
        "tag or commit",
    )
    .option(
      "--cache-dir <dir>",
      "model cache (default: DLLM_CACHE_DIR, else ~/.cache/distributed-llm); files go under hub/",
    )
    .option("--json", "print one JSON object; progress goes to stderr as JSON lines")
    .addHelpText(
      "after",
      `
Environment: HF_TOKEN (gated and private repos; sent only to the Hub, never printed),
HF_ENDPOINT (a mirror; default https://huggingface.co), HF_HUB_OFFLINE=1 (the cache only).

--json prints {"path","ref","repo","file","revision","commit","size","sha256","cached","offline"}.`,
    )
    .action(async (ref, opts) => {
      if (!isHubReference(ref)) {
        throw new CliError(
          `"${ref}" is not a Hub reference; write hf:owner/repo:QUANT or hf:owner/repo/file.gguf`,
          ExitCode.usage,
        );
      }
      const r = await pullHubModel(ref, {
        cacheDir: opts.cacheDir ?? defaultCacheDir(Deno.env.toObject()),
        json: opts.json,
      });
      if (opts.json) {
        printJson({
          path: r.path,
          ref: r.ref,
          repo: r.repo,
          file: r.file,
          revision: r.revision,
          commit: r.commit,
          size: r.size,
          sha256: r.sha256 ?? null,
          cached: r.cached,
          offline: r.offline,
        });
        return;
      }
      say(r.path);
    });
  cmd.command("list")
    .alias("ls")
    .description("models the cluster serves, with the node and layer range of each stage")
    .option("--json", "print one JSON object: {models: [...]}")
    .action(async (opts, c) => {
      const conn = await connect(globals(c));
      let info;
      let caches: TransferProgress[] = [];
      try {
        info = await conn.call((a) => a.discovery.getClusterInfo({}, a.callOptions));
        // Per-node cached bytes and transfer state (TransferStatus of every alive member).
        caches = (await Promise.all(
          info.nodes.filter((n) => n.state === NodeState.ALIVE).map(async (n) => {
            try {
              const other = n.id === info!.responderId
                ? conn
                : await conn.to(nodeEndpoint(n), n.id);
              try {
                return (await other.transfer.transferStatus({}, conn.callOptions)).models;
              } finally {
                if (other !== conn) other.close();
              }
            } catch {
              return [];
            }
          }),
        )).flat();
      } finally {
        conn.close();
      }
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
      for (const t of caches) if (!byModel.has(t.model)) byModel.set(t.model, []);
      /**
       * Whether the cluster serves `model`, or is deploying it: a node hosts or offers it, it is
       * the placement's, or a node is fetching it. Otherwise its bytes are only cached (a model
       * undeployed, or replaced by another deploy), which is not a model waiting for its layers.
       */
      const deployed = (model: string, hosts: unknown[]) =>
        hosts.length > 0 || p?.model === model ||
        caches.some((t) =>
          t.model === model && (t.served || t.state === TransferState.FETCHING ||
            t.state === TransferState.PENDING)
        );
      const models = [...byModel].map(([model, hosts]) => {
        hosts.sort((a, b) => a.from - b.from);
        const total = p?.model === model ? p.totalLayers : Math.max(0, ...hosts.map((h) => h.to));
        let at = 0;
        for (const h of hosts) if (h.from <= at && h.state === "alive") at = Math.max(at, h.to);
        return {
          model,
          deployed: deployed(model, hosts),
          total_layers: total,
          epoch: p?.model === model ? Number(p.epoch) : null,
          ready: total > 0 && at >= total,
          planned: p?.model === model
            ? p.stages.map((s) => ({ node: s.nodeId, from: s.fromLayer, to: s.toLayer }))
            : [],
          hosted: hosts,
          nodes: caches.filter((t) => t.model === model).map(progressJson),
        };
      });
      if (opts.json) {
        printJson({ responder: info.responderId, models });
        return;
      }
      if (models.length === 0) {
        say(
          "no model is served; start agents with --model <path>, or `llmctl models deploy <path>`",
        );
        return;
      }
      for (const m of models) {
        if (!m.deployed) {
          // Not "not ready": nothing will load it until it is deployed again.
          const on = [...new Set(m.nodes.map((n) => n.node))].join(", ");
          say(
            `${m.model}: not deployed (undeployed or replaced; its bytes are cached on ${on}: ` +
              "`llmctl models deploy` serves it again)",
          );
        } else {
          say(
            `${m.model}: ${m.total_layers} layers, ${m.ready ? "ready" : "not ready"}` +
              (m.epoch !== null ? `, placement epoch ${m.epoch}` : ""),
          );
        }
        // A table of no rows is a bare header: say so instead (a model no node hosts yet).
        if (m.deployed && m.hosted.length === 0) say("  no node hosts its layers yet");
        else if (m.hosted.length > 0) {
          say(table(
            ["node", "layers", "state", "range"],
            m.hosted.map((h) => [
              h.node,
              `[${h.from},${h.to})`,
              h.state,
              layerBar(h.from, h.to, m.total_layers, 32),
            ]),
          ));
        }
        const nodes = caches.filter((t) => t.model === m.model);
        if (nodes.length) {
          say(table(
            ["node", "transfer", "cached", "needed", "detail"],
            nodes.map((t) => [
              t.nodeId,
              transferStateName(t.state),
              formatBytes(Number(t.cachedBytes)),
              `${formatBytes(Number(t.bytesDone))}/${formatBytes(Number(t.bytesTotal))}`,
              t.detail,
            ]),
          ));
        }
      }
    });
  cmd.command("deploy")
    .description(
      "deploy a GGUF file: the agents fetch exactly their layers from peers that have them",
    )
    .argument(
      "<path>",
      "GGUF path on the source agent (a relative path that exists here is made absolute), or " +
        "an hf: reference with --from-here (pulled here first)",
    )
    .option("--source <node>", "node holding the file (default: the agent llmctl talks to)")
    .option("--nodes <list>", "comma-separated nodes to deploy to (default: every alive member)")
    .option(
      "--transfer-rate-limit <rate>",
      "most bytes/s each node fetches at, e.g. 20MB (default: the agents' --transfer-rate-limit)",
    )
    .option(
      "--from-here [address]",
      "serve <path> from this machine (llmctl stays up until the deploy ends); agents reach it " +
        "at address (default 127.0.0.1; plaintext, so not with --tls-*)",
    )
    .option("--json", "print progress events, one JSON object per line")
    .action(async (path, opts, c) => {
      let rate = 0;
      if (opts.transferRateLimit) {
        try {
          rate = parseBytes(opts.transferRateLimit.replace(/\/s$/i, ""));
        } catch (e) {
          throw new CliError(`--transfer-rate-limit: ${(e as Error).message}`, ExitCode.usage);
        }
      }
      // A list that names no node (", ,", "") meant every member: a deploy far wider than asked.
      const nodes = opts.nodes?.split(",").map((x) => x.trim()).filter(Boolean);
      if (nodes !== undefined && nodes.length === 0) {
        throw new CliError(
          "--nodes names no node; leave it out to deploy to every member",
          ExitCode.usage,
        );
      }
      const g = globals(c);
      if (opts.fromHere && (g.tlsCert || g.tlsCa)) {
        throw new CliError(
          "--from-here serves plaintext, which agents with mTLS refuse; copy the file to an " +
            "agent and deploy with --source <node>",
          ExitCode.usage,
        );
      }
      if (isHubReference(path)) {
        // Agents fetch a deploy from a node that holds the file: pull it here and serve it.
        if (!opts.fromHere) {
          throw new CliError(
            `deploying ${path} needs --from-here: llmctl pulls it from the Hub into its cache and ` +
              `serves it to the agents (or start the agents with --model ${path})`,
            ExitCode.usage,
          );
        }
        path = await localModelPath(path, { json: opts.json });
      }
      if (!isAbsolute(path) && await Deno.stat(path).then(() => true, () => false)) {
        path = resolve(path);
      }
      let files: FileServer | undefined;
      if (opts.fromHere) {
        path = resolve(path);
        const host = opts.fromHere === true ? "127.0.0.1" : opts.fromHere;
        // ("999.1.1.1" failed as a name lookup, exit 1, not as the flag's mistake)
        files = await startFileServer({ host, path }).catch((e: Error) => {
          // the file's own errors, said as before
          if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) {
            throw e;
          }
          throw new CliError(
            `--from-here ${host}: cannot listen there (${e.message}); give an address of this ` +
              `machine that the agents reach`,
            ExitCode.usage,
          );
        });
      }
      const conn = await connect(g);
      const view = new TransferProgressView({ mode: opts.json ? "json" : undefined });
      let last: DeployResponse | undefined;
      try {
        await conn.ready();
        for await (
          const m of conn.transfer.deploy({
            path,
            sourceNodeId: opts.source ?? "",
            nodes: nodes ?? [],
            rateLimitBytesPerSecond: BigInt(rate),
            sourceEndpoint: files?.endpoint ?? "",
          })
        ) {
          view.update(m);
          last = m;
        }
      } catch (e) {
        throw rpcError(e, conn.endpoint, conn.tls);
      } finally {
        conn.close();
        await files?.close();
      }
      if (!last?.done) {
        throw new CliError("the deploy stream ended early; see `llmctl models list`");
      }
    });
  cmd.command("undeploy")
    .description("stop serving a model on every agent (frees memory); --purge also its cache")
    .argument("[model]", "model id or file name (default: the served model)")
    .option("--purge", "also delete the cached bytes on every agent")
    .option("--json", "print one JSON object")
    .action(async (model, opts, c) => {
      // "" meant the served model (an unset variable in a script undeployed it everywhere).
      if (model !== undefined && model.trim() === "") {
        throw new CliError(
          "the model is empty; name one, or leave it out for the served model",
          ExitCode.usage,
        );
      }
      const res = await withAgent(
        globals(c),
        (a) =>
          a.transfer.undeploy({ model: model ?? "", purge: opts.purge ?? false }, a.callOptions),
      );
      if (opts.json) {
        printJson({
          nodes: res.nodes,
          purged_bytes: Number(res.purgedBytes),
          message: res.message,
        });
        return;
      }
      say(res.message);
    });
  cmd.command("inspect")
    .description("print a GGUF file's metadata and tensor table (reads only the header and index)")
    .argument("<file>", "GGUF model file, or an hf: reference (pulled into the cache first)")
    .option("--json", "print one JSON object")
    .option("--full", "print arrays whole instead of a preview")
    .action(async (path, opts) => {
      path = await localModelPath(path, { json: opts.json });
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
        const model = summarizeModel(file, () => tokenizerFromMetadata(file.metadata).vocabSize);
        if (opts.json) {
          printJson({
            path,
            model,
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
        say(
          `${path}: GGUF v${file.version}, ${formatBytes(file.fileSize)}, ` +
            `${tensors.length} tensors (${formatBytes(totalBytes)}), data at ${file.dataOffset}`,
        );
        say(`model: ${formatModelSummary(model)}`);
        say("\nmetadata:");
        say(table(
          ["key", "value"],
          Object.entries(metadata).map((
            [k, v],
          ) => [k, typeof v === "string" ? v : JSON.stringify(v)]),
        ));
        say("\ntensors:");
        say(table(
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
