/**
 * `llmctl bench <name> [flags…]`: run one benchmark of bench/ (the same as
 * `deno task bench <name>`); each prints JSON on stdout.
 */
import { Command } from "@commander-js/extra-typings";
import { fromFileUrl } from "../paths.ts";
import { CliError } from "../client.ts";
import { ExitCode, printJson } from "../common.ts";
import { BENCHES } from "../../bench/names.ts";

const BENCH_DIR = new URL("../../bench/", import.meta.url);

/** Benchmarks present in bench/ (every entry of bench/names.ts whose file exists). */
export function availableBenches(): string[] {
  return Object.entries(BENCHES).filter(([, file]) => {
    try {
      Deno.statSync(new URL(file, BENCH_DIR));
      return true;
    } catch {
      return false;
    }
  }).map(([name]) => name);
}

/** Build the `bench` command. */
export function benchCommand() {
  return new Command("bench")
    .description("run a benchmark of bench/ (deno task bench <name>); it prints JSON")
    .argument("[name]", "benchmark name (see --list)")
    .argument("[flags...]", "flags passed to the benchmark (put them after --)")
    .option("--list", "list the benchmarks")
    .option("--json", "with --list: print one JSON object")
    .addHelpText("after", `\nExample: llmctl bench cpu -- --help`)
    .action(async (name, flags, opts) => {
      const names = availableBenches();
      if (opts.list || !name) {
        if (opts.json) printJson({ benches: names });
        else console.log(names.join("\n"));
        return;
      }
      if (!names.includes(name)) {
        throw new CliError(
          `no benchmark "${name}"; choose one of ${names.join(", ")}`,
          ExitCode.usage,
        );
      }
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", fromFileUrl(new URL("main.ts", BENCH_DIR)), name, ...flags],
        stdin: "inherit",
        stdout: "inherit",
        stderr: "inherit",
      }).spawn();
      const { code } = await child.status;
      if (code !== 0) throw new CliError(`benchmark ${name} exited with ${code}`, code);
    });
}
