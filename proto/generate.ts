/**
 * Generate TypeScript from proto/distributed_llm/v1/*.proto into proto/gen/ with
 * `@bufbuild/protoc-gen-es` (target=ts, import_extension=ts), after `buf lint`.
 *
 * ```sh
 * deno run -A proto/generate.ts            # regenerate proto/gen/
 * deno run -A proto/generate.ts --check    # fail when proto/gen/ is stale
 * ```
 *
 * The compiler is buf, from the npm package `@bufbuild/buf` (it ships the binary, so nothing
 * outside the npm registry is needed). buf and the plugin are installed once with npm into
 * `.cache/proto-tools/` (git-ignored) at pinned versions: the plugin version must match the
 * `@bufbuild/protobuf` runtime in deno.json, or the generated code would not type-check. The
 * plugin runs under Deno, so only npm (to install) and Deno (to run) are required.
 *
 * @module
 */
import { fileURLToPath as fromFileUrl } from "node:url";

/** Versions of the code generator tools; protoc-gen-es must equal deno.json's @bufbuild/protobuf. */
export const TOOL_VERSIONS = { buf: "1.75.0", protocGenEs: "2.17.0" } as const;

/** proto/ — the buf module root (imports read "distributed_llm/v1/x.proto"). */
export const PROTO_DIR: string = fromFileUrl(new URL(".", import.meta.url)).replace(/\/$/, "");
/** Where the committed generated code lives. */
export const GEN_DIR = `${PROTO_DIR}/gen`;
const REPO_ROOT = fromFileUrl(new URL("..", import.meta.url)).replace(/\/$/, "");
/** Default tool cache, inside the repo's git-ignored .cache/. */
export const TOOLS_DIR = `${REPO_ROOT}/.cache/proto-tools`;

/** The generator could not run; the message says what to install or fix. */
export class ProtoGenError extends Error {
  /** @param message what failed and what to do */
  constructor(message: string) {
    super(message);
    this.name = "ProtoGenError";
  }
}

async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new ProtoGenError(`"${cmd}" is not installed; install Node.js/npm (it fetches buf)`);
    }
    throw e;
  }
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) {
    throw new ProtoGenError(`${cmd} ${args.join(" ")} failed (exit ${out.code}):\n${text.trim()}`);
  }
  return text;
}

async function installedVersion(dir: string, pkg: string): Promise<string | null> {
  try {
    const json = JSON.parse(await Deno.readTextFile(`${dir}/node_modules/${pkg}/package.json`));
    return json.version ?? null;
  } catch {
    return null;
  }
}

/**
 * Install buf and protoc-gen-es into `dir` unless the pinned versions are already there;
 * returns the paths of the buf binary and the plugin script.
 */
export async function ensureTools(dir = TOOLS_DIR): Promise<{ buf: string; plugin: string }> {
  const want = {
    "@bufbuild/buf": TOOL_VERSIONS.buf,
    "@bufbuild/protoc-gen-es": TOOL_VERSIONS.protocGenEs,
  };
  const missing = [];
  for (const [pkg, version] of Object.entries(want)) {
    if (await installedVersion(dir, pkg) !== version) missing.push(`${pkg}@${version}`);
  }
  if (missing.length > 0) {
    await Deno.mkdir(dir, { recursive: true });
    // A package.json of its own keeps npm from walking up into the repository.
    await Deno.writeTextFile(`${dir}/package.json`, '{ "private": true }\n');
    await run("npm", [
      "install",
      "--no-audit",
      "--no-fund",
      "--no-save",
      "--prefix",
      dir,
      ...Object.entries(want).map(([p, v]) => `${p}@${v}`),
    ], dir);
  }
  // node_modules/.bin/buf is a Node.js shim that finds the binary in the platform package;
  // calling the binary directly saves starting Node for every run.
  const platform = `${Deno.build.os === "windows" ? "win32" : Deno.build.os}-${
    Deno.build.arch === "x86_64" ? "x64" : "aarch64"
  }`;
  const binary = `${dir}/node_modules/@bufbuild/buf-${platform}/bin/buf`;
  let buf = binary;
  try {
    await Deno.stat(binary);
  } catch {
    buf = `${dir}/node_modules/.bin/buf`;
  }
  return { buf, plugin: `${dir}/node_modules/@bufbuild/protoc-gen-es/bin/protoc-gen-es` };
}

/** Lint the .proto files and generate TypeScript into `outDir` (which is emptied first). */
export async function generate(outDir = GEN_DIR, toolsDir = TOOLS_DIR): Promise<void> {
  const { buf, plugin } = await ensureTools(toolsDir);
  await run(buf, ["lint", PROTO_DIR], PROTO_DIR);
  await Deno.remove(outDir, { recursive: true }).catch(() => {});
  // The plugin is CommonJS without a .cjs extension, hence --unstable-detect-cjs; --no-config
  // and --no-lock keep it from touching the repository's deno.json/deno.lock.
  const template = {
    version: "v2",
    plugins: [{
      local: ["deno", "run", "-A", "--no-config", "--no-lock", "--unstable-detect-cjs", plugin],
      out: outDir,
      opt: ["target=ts", "import_extension=ts"],
    }],
  };
  await run(buf, ["generate", PROTO_DIR, "--template", JSON.stringify(template)], PROTO_DIR);
}

/** Every file under `dir`, relative path → contents. */
export async function readTree(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  async function walk(sub: string) {
    for await (const e of Deno.readDir(`${dir}/${sub}`)) {
      const rel = sub ? `${sub}/${e.name}` : e.name;
      if (e.isDirectory) await walk(rel);
      else out.set(rel, await Deno.readTextFile(`${dir}/${rel}`));
    }
  }
  await walk("");
  return out;
}

/** Names of files that differ between two trees (added, removed or changed), sorted. */
export function diffTrees(a: Map<string, string>, b: Map<string, string>): string[] {
  const names = new Set([...a.keys(), ...b.keys()]);
  return [...names].filter((n) => a.get(n) !== b.get(n)).sort();
}

/** Regenerate into a temporary directory and list files where proto/gen/ differs. */
export async function staleFiles(toolsDir = TOOLS_DIR): Promise<string[]> {
  const tmp = await Deno.makeTempDir({ prefix: "dllm-proto-gen-" });
  try {
    await generate(`${tmp}/gen`, toolsDir);
    const committed = await readTree(GEN_DIR).catch(() => new Map<string, string>());
    return diffTrees(await readTree(`${tmp}/gen`), committed);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) {
  try {
    if (Deno.args.includes("--check")) {
      const stale = await staleFiles();
      if (stale.length > 0) {
        console.error(
          `proto/gen is stale (${stale.join(", ")}); run: deno run -A proto/generate.ts`,
        );
        Deno.exit(1);
      }
      console.log("proto/gen is up to date");
    } else {
      await generate();
      console.log(`generated ${[...(await readTree(GEN_DIR)).keys()].sort().join(", ")}`);
    }
  } catch (e) {
    console.error(`proto/generate.ts: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
