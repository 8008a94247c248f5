/**
 * `deno task bench <name> [flags]` — run one benchmark of bench/<name>.ts. Each prints one JSON
 * object per run on stdout and compares with a reference measured in the same run.
 */
import { fileURLToPath } from "node:url";
import { BENCHES } from "./names.ts";

const [name, ...rest] = Deno.args;
const available = Object.entries(BENCHES)
  .filter(([, file]) => exists(new URL(file, import.meta.url)))
  .map(([n]) => n);
if (!name || name === "--help" || !available.includes(name)) {
  console.error(
    `usage: deno task bench <${available.join("|")}> [flags]   (each bench has --help)`,
  );
  Deno.exit(name && name !== "--help" ? 2 : 0);
}
const child = new Deno.Command(Deno.execPath(), {
  args: ["run", "--allow-all", fileURLToPath(new URL(BENCHES[name], import.meta.url)), ...rest],
  stdin: "inherit",
  stdout: "inherit",
  stderr: "inherit",
}).spawn();
Deno.exit((await child.status).code);

function exists(url: URL): boolean {
  try {
    Deno.statSync(url);
    return true;
  } catch {
    return false;
  }
}
