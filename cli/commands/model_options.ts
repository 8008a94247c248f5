/**
 * Options shared by the commands that load a model locally (generate, eval), and the code that
 * turns them into an Engine.
 */
import { Command, Option } from "@commander-js/extra-typings";
import { BACKEND_NAMES, parseBackendName, selectBackend } from "../../kernels/select.ts";
import { Engine } from "../../cluster/pipeline/mod.ts";
import { DEFAULT_MODEL, intOption } from "../common.ts";

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
  try {
    return await Engine.open(opts.model, backend, { nCtx: opts.ctx });
  } catch (e) {
    backend.dispose();
    throw e;
  }
}
