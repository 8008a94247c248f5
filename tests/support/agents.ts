/**
 * Real agent processes on loopback for end-to-end tests: start them, wait until the cluster has
 * placed the model, talk to them over RPC, kill them.
 */
import { createClient } from "@connectrpc/connect";
import { createRpcTransport, type RpcTransport } from "../../cluster/rpc/mod.ts";
import { DiscoveryService, InferenceService, NodeState } from "../../proto/mod.ts";
import { REPO } from "./paths.ts";

/** A running agent process. */
export interface AgentProcess {
  id: string;
  child: Deno.ChildProcess;
  rpcPort: number;
  gossipAddr: string;
  /** Every JSON log line so far. */
  logs: Record<string, unknown>[];
  transport: RpcTransport;
}

/** Options for one agent. */
export interface AgentOptions {
  id: string;
  seeds?: string[];
  model?: string;
  memoryBudget?: string;
  extra?: string[];
  env?: Record<string, string>;
}

/** Start an agent process and wait until it listens. */
export async function startAgent(opts: AgentOptions): Promise<AgentProcess> {
  const args = [
    "run",
    "--allow-all",
    `${REPO}/cli/agent.ts`,
    "--node-id",
    opts.id,
    "--rpc-port",
    "0",
    "--gossip-port",
    "0",
    "--gossip-preset",
    "local",
    "--backend",
    "reference",
    "--context-size",
    "256",
    "--max-sessions",
    "8",
    "--log-level",
    "debug",
  ];
  if (opts.seeds?.length) args.push("--seeds", opts.seeds.join(","));
  if (opts.model) args.push("--model", opts.model);
  if (opts.memoryBudget) args.push("--memory-budget", opts.memoryBudget);
  args.push(...(opts.extra ?? []));
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO,
    env: { NO_COLOR: "1", ...opts.env },
    stdout: "null",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const logs: Record<string, unknown>[] = [];
  let started: ((l: Record<string, unknown>) => void) | undefined;
  let failed: ((e: Error) => void) | undefined;
  const ready = new Promise<Record<string, unknown>>((res, rej) => {
    started = res;
    failed = rej;
  });
  const raw: string[] = [];
  (async () => {
    const lines = child.stderr.pipeThrough(new TextDecoderStream());
    let buf = "";
    for await (const chunk of lines) {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        raw.push(line);
        try {
          const obj = JSON.parse(line);
          logs.push(obj);
          if (obj.msg === "agent started") started?.(obj);
        } catch {
          // not a log line (e.g. an error before logging started)
        }
      }
    }
    failed?.(new Error(`agent ${opts.id} exited before starting:\n${raw.join("\n")}`));
  })();
  const timer = setTimeout(
    () => failed?.(new Error(`agent ${opts.id} did not start in 30 s`)),
    30_000,
  );
  try {
    const line = await ready;
    const rpcPort = Number(String(line.rpc).split(":").pop());
    return {
      id: opts.id,
      child,
      rpcPort,
      gossipAddr: String(line.gossip),
      logs,
      transport: await createRpcTransport(`127.0.0.1:${rpcPort}`),
    };
  } catch (e) {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** Start `n` agents that join the first one. */
export async function startCluster(
  ids: string[],
  opts: Omit<AgentOptions, "id" | "seeds"> = {},
): Promise<AgentProcess[]> {
  const first = await startAgent({ ...opts, id: ids[0] });
  const rest = await Promise.all(
    ids.slice(1).map((id) => startAgent({ ...opts, id, seeds: [first.gossipAddr] })),
  );
  return [first, ...rest];
}

/** Wait until `agent` sees `n` alive members whose hosted ranges tile the model. */
export async function waitForPlacement(agent: AgentProcess, n: number, timeoutMs = 30_000) {
  const client = createClient(DiscoveryService, agent.transport);
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const info = await client.getClusterInfo({});
      const alive = info.nodes.filter((x) => x.state === NodeState.ALIVE);
      const total = info.placement?.totalLayers ?? 0;
      const hosted = alive.filter((x) => x.hosted).map((
        x,
      ) => [x.hosted!.fromLayer, x.hosted!.toLayer]);
      hosted.sort((a, b) => a[0] - b[0]);
      let at = 0;
      for (const [f, t] of hosted) if (f === at) at = t;
      last = JSON.stringify({ alive: alive.length, hosted, total });
      if (alive.length === n && total > 0 && at === total) return info;
    } catch (e) {
      last = String(e);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no placement over ${n} agents within ${timeoutMs} ms (last: ${last})`);
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

/** Stop agents (SIGTERM for a graceful leave), wait for them, close transports. */
export async function stopAll(agents: AgentProcess[]): Promise<void> {
  await Promise.all(agents.map(async (a) => {
    a.transport.close();
    try {
      a.child.kill("SIGTERM");
    } catch { /* already dead */ }
    const timer = setTimeout(() => {
      try {
        a.child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5000);
    await a.child.status;
    clearTimeout(timer);
  }));
}
