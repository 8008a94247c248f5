/**
 * `host:port` for any listener or peer, IPv6 hosts in brackets: the one place that writes it
 * (gossip, the listeners' messages, discovery seeds, llmctl's endpoints).
 *
 * @module
 */

/** `host:port`, with brackets around IPv6 hosts. */
export function joinHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
