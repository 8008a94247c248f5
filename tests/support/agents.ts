/**
 * Real agent processes on loopback for end-to-end tests: start them, wait until the cluster has
 * placed the model, talk to them over RPC, kill them.
 */
import { createClient } from "@connectrpc/connect";
import { createRpcTransport, type RpcTransport } from "../../cluster/rpc/mod.ts";
import { InferenceService } from "../../proto/mod.ts";
import {
  type LocalAgent,
  startLocalAgent,
  startLocalCluster,
  stopLocalAgents,
  waitForPlacement as waitForLocalPlacement,
} from "../../cli/local_cluster.ts";

/** A running agent process with an RPC transport to it. */
export interface AgentProcess extends LocalAgent {
  transport: RpcTransport;
}

/** Options for one test agent. */
export interface AgentOptions {
  id: string;
  seeds?: string[];
  model?: string;
  memoryBudget?: string;
  extra?: string[];
  env?: Record<string, string>;
}

/**
 * Each test agent's model cache: its own folder under one temporary root per test process, so
 * no test sees what another test, a bench or the user left in ~/.cache/distributed-llm (a
 * stale model there made `models list` show two models), and an agent restarted under the same
 * id finds its cache again, as on a machine of its own.
 */
const CACHE_ROOT = Deno.makeTempDirSync({ prefix: "dllm-test-cache-" });
globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(CACHE_ROOT, { recursive: true });
  } catch { /* agents may still be writing; the OS temp dir takes the rest */ }
});

/** A private --cache-dir for agent `id`, unless the test chose one. */
function cacheArgs(id: string, opts: Omit<AgentOptions, "id" | "seeds">): string[] {
  if (opts.extra?.includes("--cache-dir") || opts.env?.DLLM_CACHE_DIR) return [];
  return ["--cache-dir", `${CACHE_ROOT}/${id}`];
}

/**
 * The backend test agents run: the reference backend (fast to start, the numerics every other
 * backend is checked against), or DLLM_TEST_BACKEND (`DLLM_TEST_BACKEND=wasm deno test -A
 * tests/e2e` runs the end-to-end tests on what users get by default).
 */
const TEST_BACKEND = Deno.env.get("DLLM_TEST_BACKEND") ?? "reference";

/** Test defaults: fast gossip, the test backend, small contexts. */
function agentArgs(opts: Omit<AgentOptions, "id" | "seeds">): string[] {
  const args = [
    "--gossip-preset",
    "local",
    "--backend",
    TEST_BACKEND,
    "--context-size",
    "256",
    "--max-sessions",
    "8",
    "--log-level",
    "debug",
  ];
  if (opts.model) args.push("--model", opts.model);
  if (opts.memoryBudget) args.push("--memory-budget", opts.memoryBudget);
  return [...args, ...(opts.extra ?? [])];
}

async function withTransport(a: LocalAgent): Promise<AgentProcess> {
  return { ...a, transport: await createRpcTransport(`127.0.0.1:${a.rpcPort}`) };
}

/** Start an agent process and wait until it listens. */
export async function startAgent(opts: AgentOptions): Promise<AgentProcess> {
  return withTransport(
    await startLocalAgent({
      id: opts.id,
      seeds: opts.seeds,
      args: [...agentArgs(opts), ...cacheArgs(opts.id, opts)],
      env: opts.env,
    }),
  );
}

/** Start `n` agents that join the first one. */
export async function startCluster(
  ids: string[],
  opts: Omit<AgentOptions, "id" | "seeds"> = {},
): Promise<AgentProcess[]> {
  const agents = await startLocalCluster(
    ids,
    { args: agentArgs(opts), env: opts.env },
    (id) => cacheArgs(id, opts),
  );
  return Promise.all(agents.map(withTransport));
}

/** Wait until `agent` sees `n` alive members whose hosted ranges tile the model. */
export function waitForPlacement(agent: AgentProcess, n: number, timeoutMs = 30_000) {
  return waitForLocalPlacement(agent.transport, n, timeoutMs);
}

/** Greedy generation through `agent` as the head. */
export async function generate(
  agent: AgentProcess,
  prompt: string,
  maxTokens: number,
  extra: Record<string, unknown> = {},
) {
  const client = createClient(InferenceService, agent.transport);
  const tokens: number[] = [];
  let text = "";
  let recoveries = 0;
  let finish = 0;
  for await (
    const m of client.generate({ prompt, maxTokens, sampler: { temperature: 0 }, ...extra })
  ) {
    if (!m.finishReason) tokens.push(m.tokenId);
    text += m.text;
    if (m.finishReason) {
      finish = m.finishReason;
      recoveries = m.usage?.recoveries ?? 0;
    }
  }
  return { tokens, text, recoveries, finish };
}

/** Stop agents (SIGTERM for a graceful leave) and close their transports. */
export async function stopAll(agents: AgentProcess[]): Promise<void> {
  for (const a of agents) a.transport.close();
  await stopLocalAgents(agents);
}

/**
 * An agent's mTLS flags for node `id` from a folder `initCertificates` filled: its certificate,
 * its key, and the cluster CA.
 */
export function agentTlsFlags(dir: string, id: string): string[] {
  return [
    "--tls-cert",
    `${dir}/${id}.crt`,
    "--tls-key",
    `${dir}/${id}.key`,
    "--tls-ca",
    `${dir}/ca.crt`,
  ];
}
