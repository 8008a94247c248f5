/**
 * The independent gRPC client (tests/interop/client.mjs: @grpc/grpc-js + @grpc/proto-loader under
 * Node.js): install its packages once into .cache/interop/ and run it against an endpoint.
 */
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");
const INTEROP = `${ROOT}/tests/interop`;
const MODULES = `${ROOT}/.cache/interop`;

async function sh(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  try {
    const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    const dec = new TextDecoder();
    return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`"${cmd}" is not installed; the gRPC interop test needs Node.js and npm`);
    }
    throw e;
  }
}

/** Install grpc-js + proto-loader into .cache/interop unless the same lock file is there. */
export async function ensureClientPackages(): Promise<void> {
  const lock = await Deno.readTextFile(`${INTEROP}/package-lock.json`);
  const installed = await Deno.readTextFile(`${MODULES}/package-lock.json`).catch(() => "");
  const present = await Deno.stat(`${MODULES}/node_modules/@grpc/grpc-js/package.json`).then(
    () => true,
    () => false,
  );
  if (installed === lock && present) return;
  await Deno.mkdir(MODULES, { recursive: true });
  await Deno.copyFile(`${INTEROP}/package.json`, `${MODULES}/package.json`);
  await Deno.copyFile(`${INTEROP}/package-lock.json`, `${MODULES}/package-lock.json`);
  const r = await sh("npm", ["ci", "--no-audit", "--no-fund", "--prefix", MODULES]);
  if (r.code !== 0) throw new Error(`npm ci for the interop client failed:\n${r.out}`);
}

/** What the client printed. */
export interface ClientResult {
  ok: boolean;
  code?: number;
  details?: string;
  clusterInfo?: {
    clusterName: string;
    responderId: string;
    nodes: { id: string; state: string }[];
  };
  health?: { status: string; nodeId: string; state: string };
}

/** Call GetClusterInfo and HealthCheck at `target` (with client certificate files for mTLS). */
export async function runClient(
  target: string,
  tls: { ca: string; cert?: string; key?: string } | null,
): Promise<ClientResult> {
  const cfg = { modules: MODULES, protoDir: `${ROOT}/proto`, target, tls };
  const r = await sh("node", [`${INTEROP}/client.mjs`, JSON.stringify(cfg)]);
  const line = r.out.trim().split("\n").findLast((l) => l.startsWith("{"));
  if (!line) throw new Error(`interop client printed no result (exit ${r.code}):\n${r.out}`);
  return JSON.parse(line);
}
