/** Run llmctl as a real process, the way a user does. */
import { REPO } from "./paths.ts";

/** Result of one llmctl run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Start `deno run -A cli/llmctl.ts ...args` from the repo root, its output (and `stdin`) piped. */
export function spawnLlmctl(
  args: string[],
  { env = {}, stdin = false }: { env?: Record<string, string>; stdin?: boolean } = {},
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${REPO}/cli/llmctl.ts`, ...args],
    cwd: REPO,
    env: { NO_COLOR: "1", ...env },
    stdin: stdin ? "piped" : "inherit",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Run `deno run -A cli/llmctl.ts ...args` from the repo root. */
export async function llmctl(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const out = await spawnLlmctl(args, { env }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Run llmctl and parse its stdout as one JSON object; fails with stderr when it exits non-zero. */
export async function llmctlJson(args: string[]): Promise<Record<string, unknown>> {
  const r = await llmctl(args);
  if (r.code !== 0) throw new Error(`llmctl ${args.join(" ")} exited ${r.code}:\n${r.stderr}`);
  return JSON.parse(r.stdout);
}
