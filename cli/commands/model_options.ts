/**
 * Options shared by the commands that load a model locally (generate, eval), and the code that
 * turns them into an Engine.
 */
import { Command, type CommandUnknownOpts, Option } from "@commander-js/extra-typings";
import { BACKEND_NAMES, parseBackendName, selectBackend } from "../../kernels/select.ts";
import { Engine } from "../../cluster/pipeline/mod.ts";
import { DEFAULT_MODEL, ExitCode, intOption } from "../common.ts";
import { CliError } from "../client.ts";

/** A command named `name` with --model, --backend, --threads and --ctx. */
export function modelCommandBase(name: string) {
  return new Command(name)
    .option("-m, --model <path>", "GGUF model file", DEFAULT_MODEL)
    .addOption(
      new Option("--backend <name>", "compute backend").choices(BACKEND_NAMES).default("auto"),
    )
    .option("--threads <n>", "CPU threads (default: all cores)", intOption(1, 1024))
    .option("--ctx <n>", "context positions per session (default: min(model, 4096))", intOption(1));
}

/** Open the model named by the options on the chosen backend. */
export async function openEngine(
  opts: { model: string; backend: string; threads?: number; ctx?: number },
): Promise<Engine> {
  const { backend } = await selectBackend(parseBackendName(opts.backend), {
    threads: opts.threads,
  });
  let engine: Engine;
  try {
    engine = await Engine.open(opts.model, backend, { nCtx: opts.ctx });
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
