/**
 * The agent's listeners under load: bounded connections, silent ones closed, accept loops that
 * outlive a burst of EMFILE, and telling a local descriptor shortage from a peer's failure.
 *
 * @example
 * ```ts
 * const listener = guardListener(server, {
 *   name: "metrics listener",
 *   limits: { maxConnections: 128, silentMs: 10_000, idleMs: 60_000 },
 *   serve: (socket, activity) => http.emit("connection", socket),
 * });
 * ```
 * @module
 */
export * from "./backoff.ts";
export * from "./connection_guard.ts";
export * from "./exhaustion.ts";
export * from "./host_port.ts";
export * from "./node_listener.ts";
