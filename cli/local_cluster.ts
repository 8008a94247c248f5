/**
 * A cluster of agent processes on this machine (loopback): what `deno task demo` runs, and what
 * end-to-end tests drive. Each agent is a real `cli/agent.ts` process with its own ports.
 */
import { createClient } from "@connectrpc/connect";
import { fileURLToPath } from "node:url";
import { agentFootprint } from "../cluster/agent.ts";
import { modelBytes } from "../cluster/placement/mod.ts";
import { openModelFile } from "../model/engine.ts";
import type { RpcTransport } from "../cluster/rpc/mod.ts";
import { DiscoveryService, type GetClusterInfoResponse, NodeState } from "../proto/mod.ts";

/** A running agent process and what it reported at start-up. */
export interface LocalAgent {
  id: string;
  child: Deno.ChildProcess;
  rpcPort: number;
  /** Port of `/metrics` and `/health` (each local agent binds a free one). */
  metricsPort: number;
  /** Port of the OpenAI-compatible HTTP API (each local agent binds a free one). */
  httpPort: number;
  gossipAddr: string;
  /** Every JSON log line so far (the agent logs JSON lines on stderr). */
  logs: Record<string, unknown>[];
  /** The last 200 stderr lines as printed, JSON or not (a crash prints plain text). */
  stderr: string[];
  /** Every line that reports an unhandled rejection or uncaught exception (always a bug). */
  unhandled: string[];
  /** Resolves when the process exits. */
  exited: Promise<Deno.CommandStatus>;
}

/** How to start one local agent. */
export interface LocalAgentOptions {
  id: string;
  seeds?: string[];
  /** Extra agent flags, e.g. ["--model", path, "--memory-budget", "2MB"]. */
  args?: string[];
  env?: Record<string, string>;
  /** Called with each log line as it arrives. */
  onLog?: (line: Record<string, unknown>) => void;
  /** Give up waiting for "agent started" after this long. Default 30 s. */
  startTimeoutMs?: number;
}

const AGENT = fileURLToPath(new URL("./agent.ts", import.meta.url));

/** Start one agent on free ports and wait until it listens. */
export async function startLocalAgent(opts: LocalAgentOptions): Promise<LocalAgent> {
  const args = [
    "run",
    "--allow-all",
    AGENT,
    "--node-id",
    opts.id,
    "--rpc-port",
    "0",
    "--gossip-port",
    "0",
    "--metrics-port",
    "0",
    "--http-port",
    "0",
  ];
  if (opts.seeds?.length) args.push("--seeds", opts.seeds.join(","));
  args.push(...(opts.args ?? []));
  const child = new Deno.Command(Deno.execPath(), {
    args,
    env: { NO_COLOR: "1", ...opts.env },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const logs: Record<string, unknown>[] = [];
  const raw: string[] = [];
  const unhandled: string[] = [];
  let onStarted!: (l: Record<string, unknown>) => void;
  let onFailed!: (e: Error) => void;
  const started = new Promise<Record<string, unknown>>((res, rej) => {
    onStarted = res;
    onFailed = rej;
  });
  (async () => {
    let buf = "";
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        raw.push(line);
        if (raw.length > 200) raw.shift();
        if (line.includes('"msg":"unhandled promise rejection"') || /Uncaught/.test(line)) {
          unhandled.push(line.slice(0, 500));
        }
        try {
          const obj = JSON.parse(line);
          logs.push(obj);
          opts.onLog?.(obj);
          if (obj.msg === "agent started") onStarted(obj);
        } catch {
          // Not a JSON log line (an error printed before logging started).
        }
      }
    }
    onFailed(new Error(`agent ${opts.id} exited before it started:\n${raw.join("\n")}`));
  })();
  const timeout = opts.startTimeoutMs ?? 30_000;
  const timer = setTimeout(
    () => onFailed(new Error(`agent ${opts.id} did not start within ${timeout} ms`)),
    timeout,
  );
  try {
    const line = await started;
    return {
      id: opts.id,
      child,
      rpcPort: Number(String(line.rpc).split(":").pop()),
      metricsPort: Number(String(line.metrics).split(":").pop()),
      httpPort: Number(String(line.http).split(":").pop()),
      gossipAddr: String(line.gossip),
      logs,
      stderr: raw,
      unhandled,
      exited: child.status,
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

/**
 * Start agents `ids[0..]`; the first is the seed of the others. `argsFor` gives an agent
 * arguments of its own after `opts.args` (tests give each its own cache directory).
 */
export async function startLocalCluster(
  ids: string[],
  opts: Omit<LocalAgentOptions, "id" | "seeds"> = {},
  argsFor: (id: string) => string[] = () => [],
): Promise<LocalAgent[]> {
  const start = (id: string, seeds?: string[]) =>
    startLocalAgent({ ...opts, id, seeds, args: [...(opts.args ?? []), ...argsFor(id)] });
  const first = await start(ids[0]);
  try {
    const rest = await Promise.all(ids.slice(1).map((id) => start(id, [first.gossipAddr])));
    return [first, ...rest];
  } catch (e) {
    await stopLocalAgents([first]);
    throw e;
  }
}

/**
 * Stop agents gracefully (SIGTERM: they leave the gossip), killing any that hang; throws when
 * any of them printed an unhandled rejection or uncaught exception.
 */
export async function stopLocalAgents(agents: LocalAgent[], graceMs = 5000): Promise<void> {
  await Promise.all(agents.map(async (a) => {
    try {
      a.child.kill("SIGTERM");
    } catch { /* already gone */ }
    const timer = setTimeout(() => {
      try {
        a.child.kill("SIGKILL");
      } catch { /* gone */ }
    }, graceMs);
    await a.exited;
    clearTimeout(timer);
  }));
  // A rejection or exception nobody handled is a bug even when the agent survived it (it logs
  // one) or the run looked fine: report it instead of letting it pass unseen.
  const escaped = agents.flatMap((a) => a.unhandled.map((l) => `${a.id}: ${l}`));
  if (escaped.length) {
    throw new Error(`unhandled errors in agent processes:\n${escaped.join("\n")}`);
  }
}

/**
 * Wait until the agent behind `transport` sees `n` alive members whose announced layer ranges
 * tile the whole model; returns that cluster view.
 */
export async function waitForPlacement(
  transport: RpcTransport,
  n: number,
  timeoutMs = 30_000,
  /** Ends the wait (its call in flight too): it rejects with the signal's reason. */
  signal?: AbortSignal,
): Promise<GetClusterInfoResponse> {
  const client = createClient(DiscoveryService, transport);
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    try {
      const info = await client.getClusterInfo({}, { signal });
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
      signal?.throwIfAborted();
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no placement over ${n} agents within ${timeoutMs} ms (last view: ${last})`);
}

/** How to split a model over a local cluster. */
export interface SplitOptions {
  model: string;
  agents: number;
  contextSize: number;
  maxSessions: number;
  backend: string;
  threads?: number;
  logLevel?: string;
  /** Bytes each agent sets aside besides the model's share (e.g. its --prefix-cache). */
  extraBytes?: number;
}

/**
 * Agent flags that make `agents` local agents split `model`: each gets a memory budget that the
 * agents together can hold but no single agent can (one agent gets the whole model), plus the
 * given context, sessions, backend and fast local gossip timings.
 */
export async function splitModelArgs(
  o: SplitOptions,
): Promise<{ args: string[]; budget: number; need: number }> {
  const file = await openModelFile(o.model);
  let need: number;
  try {
    need = modelBytes(agentFootprint(file, o.contextSize, o.maxSessions));
  } finally {
    file.close();
  }
  const budget = (o.agents === 1 ? Math.ceil(need * 1.2) : Math.ceil((need * 1.5) / o.agents)) +
    (o.extraBytes ?? 0);
  const args = [
    "--model",
    o.model,
    "--memory-budget",
    String(budget),
    "--context-size",
    String(o.contextSize),
    "--max-sessions",
    String(o.maxSessions),
    "--gossip-preset",
    "local",
    "--backend",
    o.backend,
    "--log-level",
    o.logLevel ?? "warn",
    // Agents on one machine share its cores: their start-up calibrations would measure each
    // other, and the split would change from run to run. The same speed splits by work alone.
    "--speed",
    "1",
  ];
  if (o.threads) args.push("--threads", String(o.threads));
  return { args, budget, need };
}
