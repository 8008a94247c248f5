/**
 * How llmctl talks to an agent: the global options (`--endpoint`, `--tls-*`, `--timeout`, their
 * DLLM_* environment variables), one RPC transport per run, and errors turned into messages
 * that say what to do, with their exit codes.
 *
 * @example
 * ```ts
 * const agent = await connect(cmd.optsWithGlobals());
 * try {
 *   const info = await agent.call((c) => c.discovery.getClusterInfo({}, agent.callOptions));
 * } finally {
 *   agent.close();
 * }
 * ```
 *
 * @module
 */
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { InvalidArgumentError, Option } from "@commander-js/extra-typings";
import {
  answeredByAgent,
  createRpcTransport,
  EndpointError,
  explainRpcError,
  type RpcTransport,
} from "../cluster/rpc/mod.ts";
import {
  ClusterService,
  DiscoveryService,
  InferenceService,
  NodeService,
  TransferService,
} from "../proto/mod.ts";
import { ExitCode } from "./common.ts";

/** The agent llmctl talks to when neither --endpoint nor DLLM_ENDPOINT says otherwise. */
export const DEFAULT_ENDPOINT = "127.0.0.1:7950";

/** An error with the exit code llmctl should end with; its message is printed as is. */
export class CliError extends Error {
  /** @param message what went wrong and what to do @param exitCode process exit code */
  constructor(message: string, readonly exitCode: number = ExitCode.failure) {
    super(message);
    this.name = "CliError";
  }
}

/** Global options as commander hands them to a subcommand (optsWithGlobals()). */
export interface GlobalOptions {
  endpoint?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsServerName?: string;
  timeout?: number;
}

/**
 * Parse "500ms", "10s", "2m" into milliseconds. A bare number is refused: the agent reads one as
 * seconds and llmctl read it as milliseconds (DLLM_TIMEOUT=30 was a 30 ms deadline), and under
 * 1 ms rounded to no deadline at all.
 */
export function parseTimeout(value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m)$/.exec(value.trim());
  const ms = m ? Number(m[1]) * (m[2] === "s" ? 1000 : m[2] === "m" ? 60_000 : 1) : NaN;
  // At most 8 digits of ms, gRPC's grpc-timeout bound (1667m failed as a protocol error, and
  // past 2^31 ms a timer fired at once).
  if (!(ms >= 1 && ms <= 99_999_999)) {
    throw new CliError(
      `expected a duration from 1ms to 1666m with its unit, like 500ms, 10s or 2m, got "${value}"`,
      ExitCode.usage,
    );
  }
  return Math.round(ms);
}

/** The global options, added to the root program. */
export function globalOptions(): Option[] {
  return [
    new Option(
      "-e, --endpoint <host:port>",
      `agent to talk to (any member; default ${DEFAULT_ENDPOINT})`,
    ).env("DLLM_ENDPOINT"),
    new Option("--tls-cert <file>", "client certificate for mutual TLS").env("DLLM_TLS_CERT"),
    new Option("--tls-key <file>", "client private key").env("DLLM_TLS_KEY"),
    new Option("--tls-ca <file>", "CA that signed the agents' certificates").env("DLLM_TLS_CA"),
    new Option(
      "--tls-server-name <name>",
      "a name the agent's certificate carries when the endpoint's address is not in it " +
        "(its node id, or a Service's DNS name)",
    ).env("DLLM_TLS_SERVER_NAME"),
    new Option(
      "--timeout <duration>",
      "deadline of each request/response call, e.g. 5s (default 10s; streams are not cut)",
    )
      .env("DLLM_TIMEOUT")
      .argParser((v: string) => {
        try {
          return parseTimeout(v);
        } catch (e) {
          throw new InvalidArgumentError((e as Error).message);
        }
      }),
  ];
}

/** Whether the user chose an endpoint (flag or env), i.e. wants a remote agent. */
export function endpointGiven(opts: GlobalOptions): boolean {
  return opts.endpoint !== undefined && opts.endpoint !== "";
}

/** A connection to one agent with typed clients. */
export interface AgentConnection {
  endpoint: string;
  tls: boolean;
  transport: RpcTransport;
  discovery: Client<typeof DiscoveryService>;
  node: Client<typeof NodeService>;
  inference: Client<typeof InferenceService>;
  cluster: Client<typeof ClusterService>;
  /** Model distribution (deploy, undeploy, cache status). */
  transfer: Client<typeof TransferService>;
  /** Per-call options for unary calls (the --timeout deadline). */
  callOptions: { timeoutMs: number };
  /** Run a call; failures become a CliError that says what to do. */
  call<T>(fn: (c: AgentConnection) => Promise<T>): Promise<T>;
  /** A connection to another agent with the same TLS settings. */
  to(endpoint: string, nodeId?: string): Promise<AgentConnection>;
  /**
   * Check, within the --timeout, that the agent answers (before a stream: a stream has no
   * deadline, and would wait forever on an agent that accepts connections but never answers).
   * `signal` (Ctrl-C) ends the wait at once instead of after the whole --timeout.
   */
  ready(signal?: AbortSignal): Promise<void>;
  close(): void;
}

/** Turn a failed call into a CliError with an actionable message and exit code. */
export function rpcError(e: unknown, endpoint: string, tls: boolean): CliError {
  if (e instanceof CliError) return e;
  const ce = ConnectError.from(e);
  const lower = ce.rawMessage.toLowerCase();
  // An agent that answers is there: say what it said (e.g. "no placement"), not "no agent".
  if (answeredByAgent(ce)) {
    return new CliError(explainRpcError(ce, endpoint, { tls }), ExitCode.failure);
  }
  if (
    !tls &&
    (ce.code === Code.Unavailable || /econnrefused|connection refused/.test(lower))
  ) {
    return new CliError(
      `no agent at ${endpoint} — start one with \`deno task agent\`, or point llmctl at one ` +
        `with --endpoint host:port (or DLLM_ENDPOINT)`,
      ExitCode.unreachable,
    );
  }
  const unreachable = ce.code === Code.Unavailable || ce.code === Code.DeadlineExceeded ||
    (ce.code === Code.Canceled && !/cancel/.test(lower));
  return new CliError(
    explainRpcError(e, endpoint, { tls }),
    unreachable ? ExitCode.unreachable : ExitCode.failure,
  );
}

/**
 * A stream that broke after it had answered (`received` messages): the agent was reached, so
 * not "no agent at …, start one" (what a refused connection gets); the output so far is
 * incomplete. Undefined for a failure the agent sent (its own message says it) or a user's
 * cancel.
 */
export function streamCut(e: unknown, endpoint: string, received: number): CliError | undefined {
  if (received === 0 || e instanceof CliError || answeredByAgent(e)) return undefined;
  const ce = ConnectError.from(e);
  if (ce.code === Code.Canceled && /cancel/i.test(ce.rawMessage)) return undefined;
  return new CliError(
    `the agent at ${endpoint} stopped answering after ${received} messages (${ce.rawMessage}); ` +
      `the output is incomplete`,
    ExitCode.failure,
  );
}

/**
 * Open a transport to the agent the options name (or at `endpoint`: another member, whose
 * certificate may name its node id `nodeId` instead of its address).
 */
export async function connect(
  opts: GlobalOptions,
  endpoint?: string,
  nodeId?: string,
): Promise<AgentConnection> {
  const ep = endpoint ?? (endpointGiven(opts) ? opts.endpoint! : DEFAULT_ENDPOINT);
  const tlsParts = [opts.tlsCert, opts.tlsKey, opts.tlsCa].filter(Boolean).length;
  if (tlsParts !== 0 && tlsParts !== 3) {
    throw new CliError(
      "mutual TLS needs all three of --tls-cert, --tls-key and --tls-ca " +
        "(make them with `llmctl certs init`)",
      ExitCode.usage,
    );
  }
  const tls = tlsParts === 3
    ? {
      cert: opts.tlsCert!,
      key: opts.tlsKey!,
      ca: opts.tlsCa!,
      // A member's certificate may carry its node id, or the name all agents share.
      serverName: [nodeId, opts.tlsServerName].filter((n): n is string => !!n),
    }
    : undefined;
  let transport: RpcTransport;
  try {
    // Streams (generate, chat, deploy progress) have no deadline: a silent connection is
    // PINGed, and one that does not answer within the --timeout is closed.
    const timeoutMs = opts.timeout ?? 10_000;
    transport = await createRpcTransport(ep, {
      tls,
      keepalive: { intervalMs: Math.min(5_000, timeoutMs), timeoutMs },
    });
  } catch (e) {
    throw new CliError(
      `cannot connect to ${ep}: ${(e as Error).message}`,
      e instanceof EndpointError ? ExitCode.usage : ExitCode.failure,
    );
  }
  const conn: AgentConnection = {
    endpoint: ep,
    tls: tls !== undefined,
    transport,
    discovery: createClient(DiscoveryService, transport),
    node: createClient(NodeService, transport),
    inference: createClient(InferenceService, transport),
    cluster: createClient(ClusterService, transport),
    transfer: createClient(TransferService, transport),
    callOptions: { timeoutMs: opts.timeout ?? 10_000 },
    async call(fn) {
      try {
        return await fn(conn);
      } catch (e) {
        throw rpcError(e, ep, conn.tls);
      }
    },
    to: (other, nodeId) => connect(opts, other, nodeId),
    ready: (signal) =>
      conn.call((c) => c.node.healthCheck({}, { ...c.callOptions, signal }).then(() => {})),
    close: () => transport.close(),
  };
  return conn;
}

/** Run `fn` with a connection, closing it afterwards. */
export async function withAgent<T>(
  opts: GlobalOptions,
  fn: (c: AgentConnection) => Promise<T>,
): Promise<T> {
  const conn = await connect(opts);
  try {
    return await conn.call(fn);
  } finally {
    conn.close();
  }
}
