/**
 * Options shared by the commands that load a model locally (generate, eval), and the code that
 * turns them into an Engine.
 */
import { Command, type CommandUnknownOpts, Option } from "@commander-js/extra-typings";
import { BACKEND_NAMES, parseBackendName, selectBackend } from "../../kernels/select.ts";
import { Engine } from "../../cluster/pipeline/mod.ts";
import { DEFAULT_MODEL, ExitCode, intOption } from "../common.ts";
import { CliError } from "../client.ts";
import { PullProgressView } from "../progress.ts";
import { defaultCacheDir } from "../../cluster/transfer/mod.ts";
import {
  HubError,
  isHubReference,
  parseHubReference,
  pullModel,
  type PullResult,
} from "../../cluster/hub/mod.ts";
import { basename } from "node:path";

/** A command named `name` with --model, --backend, --threads and --ctx. */
export function modelCommandBase(name: string) {
  return new Command(name)
    .option(
      "-m, --model <path>",
      "GGUF model file, or a Hugging Face reference hf:owner/repo:QUANT / hf:owner/repo/file.gguf " +
        "(pulled into the cache first)",
      DEFAULT_MODEL,
    )
    .addOption(
      new Option("--backend <name>", "compute backend").choices(BACKEND_NAMES).default("auto"),
    )
    .option("--threads <n>", "CPU threads (default: all cores)", intOption(1, 1024))
    .option(
      "--ctx <n>",
      "context positions per session (default: min(model, 4096))",
      intOption(1, 1 << 20),
    );
}

/** Open the model named by the options on the chosen backend. */
export async function openEngine(
  opts: { model: string; backend: string; threads?: number; ctx?: number },
): Promise<Engine> {
  const path = await localModelPath(opts.model);
  const { backend } = await selectBackend(parseBackendName(opts.backend), {
    threads: opts.threads,
  });
  let engine: Engine;
  try {
    engine = await Engine.open(path, backend, { nCtx: opts.ctx });
  } catch (e) {
    backend.dispose();
    throw e;
  }
  // The Engine holds no more positions than the model's context length: say so, or a long
  // generation would end as "length" before the --ctx asked for, unexplained.
  if (opts.ctx !== undefined && opts.ctx > engine.nCtx) {
    console.error(
      `llmctl: --ctx ${opts.ctx} is past the model's context length; using ${engine.nCtx}`,
    );
  }
  return engine;
}

/**
 * Refuse the local-model options a command was given with --endpoint: the cluster's agents chose
 * their model, backend, threads and context when they started, and silently ignoring the flags
 * let a user believe they applied.
 */
export function refuseLocalOptions(cmd: {
  getOptionValueSource(key: string): string | undefined;
}): void {
  const given = (["backend", "threads", "ctx"] as const).filter((k) =>
    cmd.getOptionValueSource(k) === "cli"
  );
  if (given.length) {
    throw new CliError(
      `${given.map((k) => `--${k}`).join(", ")} ${given.length > 1 ? "work" : "works"} only ` +
        `with a local model; the cluster's agents chose theirs at start (drop --endpoint / ` +
        `DLLM_ENDPOINT, or the flag)`,
      ExitCode.usage,
    );
  }
}

/**
 * Refuse an explicit --endpoint on a command that only runs a model here (eval, tokenize): it
 * was silently ignored, so the answer looked like the cluster's. DLLM_ENDPOINT stays allowed, as
 * it is set for the commands that use it.
 */
export function refuseEndpoint(cmd: CommandUnknownOpts, name: string): void {
  let root = cmd;
  while (root.parent) root = root.parent;
  if (root.getOptionValueSource("endpoint") === "cli") {
    throw new CliError(
      `${name} runs the model here, not on the cluster; drop --endpoint ` +
        `(and give the model file with --model)`,
      ExitCode.usage,
    );
  }
}

/**
 * Pull an `hf:` reference into the model cache (`DLLM_CACHE_DIR`, else ~/.cache/distributed-llm,
 * or `cacheDir`), with progress on stderr; `HF_TOKEN`, `HF_ENDPOINT` and `HF_HUB_OFFLINE` come
 * from the environment. Hub failures become llmctl errors (a malformed reference exits 2).
 */
export async function pullHubModel(
  ref: string,
  opts: { cacheDir?: string; json?: boolean } = {},
): Promise<PullResult> {
  const env = Deno.env.toObject();
  const view = new PullProgressView({ mode: opts.json ? "json" : undefined });
  try {
    return await pullModel(ref, {
      cacheDir: opts.cacheDir ?? defaultCacheDir(env),
      env,
      onEvent: (e) => view.update(e),
    });
  } catch (e) {
    throw hubCliError(e);
  } finally {
    view.finish();
  }
}

/** A model argument as a local path: plain paths as given, `hf:` references pulled first. */
export async function localModelPath(
  model: string,
  opts: { json?: boolean } = {},
): Promise<string> {
  return isHubReference(model) ? (await pullHubModel(model, opts)).path : model;
}

/**
 * The model name a cluster is asked for (agents know models by file name): a path's base name,
 * an `hf:` reference's file name. A `:QUANT` reference names no file until it is listed, so it
 * is refused here: the agents resolved theirs when they pulled it.
 */
export function clusterModelName(model: string): string {
  if (!isHubReference(model)) return basename(model);
  let ref;
  try {
    ref = parseHubReference(model);
  } catch (e) {
    throw hubCliError(e);
  }
  if (!ref.file) {
    throw new CliError(
      `--model ${model} names no file; a cluster knows its models by file name: give ` +
        `hf:${ref.repo}/<file>.gguf or the file name (see \`llmctl models list\`)`,
      ExitCode.usage,
    );
  }
  return basename(ref.file);
}

/** A Hub failure as an llmctl error: a malformed reference is a usage error (exit 2). */
export function hubCliError(e: unknown): unknown {
  if (!(e instanceof HubError)) return e;
  return new CliError(e.message, e.kind === "usage" ? ExitCode.usage : ExitCode.failure);
}
