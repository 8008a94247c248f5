/**
 * Connections to other agents: one cached RPC transport per member (mTLS when configured, no
 * gzip: activations do not compress), dropped when gossip says the member left or died.
 *
 * @module
 */
import type { Member } from "../gossip/mod.ts";
import { createRpcTransport, type RpcTransport } from "../rpc/mod.ts";
import { traceClientInterceptor } from "../telemetry/mod.ts";
import type { AgentConfig } from "../agent_config.ts";

/** "host:port" of a member's RPC listener: its first advertised address, else its gossip host. */
export function rpcEndpoint(member: Member): string {
  const host = member.meta?.addresses[0] ??
    member.addr.slice(0, member.addr.lastIndexOf(":")).replace(/^\[|\]$/g, "");
  return `${host}:${member.meta?.rpcPort ?? 0}`;
}

/** The agent's cached transports to its peers. */
export class Peers {
  private readonly transports = new Map<string, { endpoint: string; transport: RpcTransport }>();

  constructor(private readonly config: AgentConfig) {}

  /** A (cached) RPC transport to a member; a member that moved gets a new one. */
  async transportTo(member: Member): Promise<RpcTransport> {
    const endpoint = rpcEndpoint(member);
    const cached = this.transports.get(member.id);
    if (cached && cached.endpoint === endpoint) return cached.transport;
    cached?.transport.close();
    const c = this.config;
    const transport = await createRpcTransport(endpoint, {
      tls: c.tlsCert && c.tlsKey && c.tlsCa
        ? { cert: c.tlsCert, key: c.tlsKey, ca: c.tlsCa }
        : undefined,
      interceptors: [traceClientInterceptor],
      // Activations are floats that do not compress; gzip would only add latency to every hop.
      gzip: false,
    });
    this.transports.set(member.id, { endpoint, transport });
    return transport;
  }

  /** Close the transport to a member that left or died. */
  drop(nodeId: string): void {
    const t = this.transports.get(nodeId);
    if (t) {
      t.transport.close();
      this.transports.delete(nodeId);
    }
  }

  /** Close every transport (shutdown). */
  closeAll(): void {
    for (const { transport } of this.transports.values()) transport.close();
    this.transports.clear();
  }
}
