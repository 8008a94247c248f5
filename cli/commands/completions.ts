/**
 * `llmctl completions bash|zsh|fish`: a shell completion script built from the program's own
 * command tree, so it never goes stale.
 *
 * ```sh
 * source <(llmctl completions bash)
 * llmctl completions zsh > "${fpath[1]}/_llmctl"
 * llmctl completions fish > ~/.config/fish/completions/llmctl.fish
 * ```
 */
import { Command, Option } from "@commander-js/extra-typings";
import { CliError } from "../client.ts";
import { ExitCode } from "../common.ts";

/** One node of the command tree: its subcommands and options. */
interface Node {
  path: string[];
  subcommands: { name: string; description: string }[];
  options: { flag: string; description: string }[];
  /** The flags (long and short) of its options that take a value. */
  valued: string[];
}

/** Walk `program` into a flat list of command paths. */
export function commandTree(program: Command): Node[] {
  const out: Node[] = [];
  const walk = (cmd: Command, path: string[]) => {
    const subs = cmd.commands as Command[];
    out.push({
      path,
      subcommands: subs.map((c) => ({ name: c.name(), description: c.description() })),
      options: (cmd.options as readonly Option[])
        .filter((o) => o.long)
        .map((o) => ({ flag: o.long!, description: o.description })),
      valued: (cmd.options as readonly Option[])
        .filter((o) => o.required || o.optional)
        .flatMap((o) => [o.long, o.short].filter((f): f is string => !!f)),
    });
    for (const c of subs) walk(c, [...path, c.name()]);
  };
  walk(program, []);
  return out;
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** A completion script for `shell`. */
export function completionScript(program: Command, shell: "bash" | "zsh" | "fish"): string {
  const tree = commandTree(program);
  const globalFlags = tree[0].options.map((o) => o.flag);
  if (shell === "fish") {
    const lines = [
      "# fish completion for llmctl (llmctl completions fish)",
      "complete -c llmctl -f",
    ];
    for (const n of tree) {
      const cond = n.path.length === 0
        ? "__fish_use_subcommand"
        : `__fish_seen_subcommand_from ${n.path[n.path.length - 1]}`;
      for (const s of n.subcommands) {
        lines.push(
          `complete -c llmctl -n ${quote(cond)} -a ${quote(s.name)} -d ${
            quote(s.description.slice(0, 60))
          }`,
        );
      }
      for (const o of n.options) {
        lines.push(
          `complete -c llmctl -n ${quote(n.path.length ? cond : "true")} -l ${
            o.flag.replace(/^--/, "")
          } -d ${quote(o.description.slice(0, 60))}`,
        );
      }
    }
    return lines.join("\n") + "\n";
  }
  // bash (zsh uses it through bashcompinit): words by command path.
  const cases = tree.map((n) => {
    const words = [
      ...n.subcommands.map((s) => s.name),
      ...n.options.map((o) => o.flag),
      ...(n.path.length ? globalFlags : []),
    ];
    return `    ${quote(n.path.join(" "))}) words=${quote(words.join(" "))} ;;`;
  });
  // A flag's value is not a command word: `llmctl -e h:p cluster <TAB>` is under "cluster".
  const valued = [...new Set(tree.flatMap((n) => n.valued))].join(" ");
  const bash = [
    "# bash completion for llmctl (llmctl completions bash)",
    "_llmctl() {",
    "  local cur path w words skip",
    `  local valued=${quote(` ${valued} `)}`,
    '  cur="${COMP_WORDS[COMP_CWORD]}"',
    '  path=""',
    '  skip=""',
    '  for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do',
    '    if [ -n "$skip" ]; then skip=""; continue; fi',
    '    case "$w" in',
    "      --*=*) ;;",
    '      -*) case "$valued" in *" $w "*) skip=1 ;; esac ;;',
    '      *) [ -z "$path" ] && path="$w" || path="$path $w" ;;',
    "    esac",
    "  done",
    '  while :; do case "$path" in',
    ...cases,
    '    *) if [ "${path% *}" = "$path" ]; then path=""; else path="${path% *}"; fi; continue ;;',
    "  esac; break; done",
    '  COMPREPLY=($(compgen -W "$words" -- "$cur"))',
    "}",
    "complete -F _llmctl llmctl",
  ].join("\n");
  if (shell === "bash") return bash + "\n";
  return [
    "#compdef llmctl",
    "# zsh completion for llmctl (llmctl completions zsh)",
    "autoload -U +X bashcompinit && bashcompinit",
    bash,
  ].join("\n") + "\n";
}

/** Build the `completions` command; `program` is the root (for its tree). */
export function completionsCommand(program: () => Command) {
  return new Command("completions")
    .description("print a shell completion script (bash, zsh or fish)")
    .argument("<shell>", "bash, zsh or fish")
    .addHelpText("after", "\nExample: source <(llmctl completions bash)")
    .action((shell) => {
      if (shell !== "bash" && shell !== "zsh" && shell !== "fish") {
        throw new CliError(`unknown shell "${shell}"; choose bash, zsh or fish`, ExitCode.usage);
      }
      Deno.stdout.writeSync(new TextEncoder().encode(completionScript(program(), shell)));
    });
}
