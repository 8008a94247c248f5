/**
 * Connections to other agents: one cached RPC transport per member (mTLS when configured, no
 * gzip: activations do not compress), dropped when gossip says the member left or died.
 *
 * @module
 */
import { createClient } from "@connectrpc/connect";
import { joinHostPort, type Member } from "../gossip/mod.ts";
import { createRpcTransport, type RpcTransport } from "../rpc/mod.ts";
import { Health } from "../rpc/health.ts";
import { traceClientInterceptor } from "../telemetry/mod.ts";
import type { AgentConfig } from "../agent_config.ts";

/** The host a member's services listen on: its first advertised address, else its gossip host. */
function memberHost(member: Member): string {
  return member.meta?.addresses[0] ??
    member.addr.slice(0, member.addr.lastIndexOf(":")).replace(/^\[|\]$/g, "");
}

/** "host:port" of a member's RPC listener. */
export function rpcEndpoint(member: Member): string {
  return joinHostPort(memberHost(member), member.meta?.rpcPort ?? 0);
}

/** "host:port" of a member's TCP data plane, or undefined when it announces none. */
export function dataEndpoint(member: Member): string | undefined {
  const port = member.meta?.dataPort;
  return port ? joinHostPort(memberHost(member), port) : undefined;
}

/** "http://host:port" of a member's OpenAI HTTP API (its announced httpPort; https if TLS). */
export function httpEndpoint(member: Member): string {
  const scheme = member.meta?.apiTls ? "https" : "http";
  return `${scheme}://${joinHostPort(memberHost(member), member.meta?.httpPort ?? 0)}`;
}

/** Close a transport once it is made (one that failed to be made has nothing to close). */
function closeWhenMade(t: Promise<RpcTransport>): void {
  t.then((x) => x.close(), () => {});
}

/** What TLS handshake failures say (Node's and rustls' wordings). */
const TLS_FAILURE = /certificate|unknown ca|self[- ]signed|handshake|tls/i;

/** The agent's cached transports to its peers. */
export class Peers {
  /** Per member: the endpoint dialled and its transport, a promise while it is being made. */
  private readonly transports = new Map<
    string,
    { endpoint: string; transport: Promise<RpcTransport> }
  >();
  /** Per member: aborted when gossip says it died or left (see lostSignal). */
  private readonly losses = new Map<string, AbortController>();

  constructor(private readonly config: AgentConfig) {}

  /** A (cached) RPC transport to a member; a member that moved gets a new one. */
  transportTo(member: Member): Promise<RpcTransport> {
    const endpoint = rpcEndpoint(member);
    const cached = this.transports.get(member.id);
    if (cached && cached.endpoint === endpoint) return cached.transport;
    if (cached) closeWhenMade(cached.transport);
    const c = this.config;
    // The promise is cached, not its result: callers racing for a new member's transport (the
    // first frame, a health check, a metrics viewer) share one connection instead of each
    // opening one and all but the last leaking.
    const transport = createRpcTransport(endpoint, {
      // The member's certificate may name its node id (or the name all agents' shared
      // certificate carries) rather than the address it advertises.
      tls: c.tlsCert && c.tlsKey && c.tlsCa
        ? { cert: c.tlsCert, key: c.tlsKey, ca: c.tlsCa, serverName: c.tlsPeerName ?? member.id }
        : undefined,
      interceptors: [traceClientInterceptor],
      // Activations are floats that do not compress; gzip would only add latency to every hop.
      gzip: false,
    });
    const entry = { endpoint, transport };
    this.transports.set(member.id, entry);
    // A transport that could not be made is not kept: the next call tries again.
    transport.catch(() => {
      if (this.transports.get(member.id) === entry) this.transports.delete(member.id);
    });
    return transport;
  }

  /**
   * With mTLS on, whether `member`'s RPC endpoint completes a handshake with our CA: undefined
   * when it does (or TLS is off), else the TLS error. Any other failure (not listening yet, a
   * timeout) is not a verdict on its certificate: undefined too.
   */
  async tlsRefusal(member: Member): Promise<string | undefined> {
    const c = this.config;
    if (!(c.tlsCert && c.tlsKey && c.tlsCa) || !member.meta?.rpcPort) return undefined;
    try {
      const client = createClient(Health, await this.transportTo(member));
      await client.check({ service: "" }, { timeoutMs: 5000 });
      return undefined;
    } catch (e) {
      const msg = (e as Error).message ?? String(e);
      return TLS_FAILURE.test(msg) ? msg : undefined;
    }
  }

  /**
   * Where to open Forward streams to `member` off gRPC: its data plane, unless this agent runs
   * mTLS (the plane is plaintext) or the member announces none.
   */
  forwardEndpoint(member: Member): string | undefined {
    const c = this.config;
    return c.tlsCert && c.tlsKey && c.tlsCa ? undefined : dataEndpoint(member);
  }

  /**
   * A signal aborted when gossip declares `nodeId` dead or gone. Streams to it over the data
   * plane end then: a host lost without a FIN (power, partition) leaves a TCP connection that
   * waits for hours, while gossip notices in seconds.
   */
  lostSignal(nodeId: string): AbortSignal {
    return this.#loss(nodeId).signal;
  }

  /** `nodeId`'s controller behind lostSignal, made on first use. */
  #loss(nodeId: string): AbortController {
    let c = this.losses.get(nodeId);
    if (!c) this.losses.set(nodeId, c = new AbortController());
    return c;
  }

  /** Close the transport to a member that left or died, and end the streams open to it. */
  drop(nodeId: string): void {
    const t = this.transports.get(nodeId);
    if (t) {
      closeWhenMade(t.transport);
      this.transports.delete(nodeId);
    }
    // Kept, aborted, until the member joins again: gossip lists a dead member for a while, and a
    // stage that looks it up then must not get a signal that nothing will abort.
    this.#loss(nodeId).abort(new Error(`gossip declared ${nodeId} dead or gone`));
    // Members that never come back: the oldest such entries go past a bound.
    if (this.losses.size > 4096) {
      for (const [id, old] of this.losses) {
        if (old.signal.aborted && id !== nodeId) {
          this.losses.delete(id);
          break;
        }
      }
    }
  }

  /**
   * Record a TLS verdict on `nodeId` in `untrusted` (node id → refusal): a refused member is
   * dropped (its streams end); one accepted after a refusal is watched anew, as a rejoined
   * member is (its signal stayed aborted, and every stream to it failed at once as "gone").
   * Returns how its standing changed, if it did.
   */
  tlsVerdict(
    nodeId: string,
    refusal: string | undefined,
    untrusted: Map<string, string>,
  ): "refused" | "trusted" | undefined {
    const was = untrusted.has(nodeId);
    if (refusal) {
      untrusted.set(nodeId, refusal);
      this.drop(nodeId);
      return was ? undefined : "refused";
    }
    if (!was) return undefined;
    untrusted.delete(nodeId);
    this.rejoined(nodeId);
    return "trusted";
  }

  /** A member joined (again): streams opened to it from now on are watched anew. */
  rejoined(nodeId: string): void {
    if (this.losses.get(nodeId)?.signal.aborted) this.losses.delete(nodeId);
  }

  /** Close every transport and end every stream (shutdown). */
  closeAll(): void {
    for (const { transport } of this.transports.values()) closeWhenMade(transport);
    this.transports.clear();
    for (const c of this.losses.values()) c.abort(new Error("the agent is shutting down"));
    this.losses.clear();
  }
}
