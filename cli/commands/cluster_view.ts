/**
 * Shared pieces of the commands that show the cluster: state names and colors, a node's
 * endpoint, JSON of wire messages, and reading the global options from a subcommand.
 */
import { type DescMessage, type MessageShape, toJson } from "@bufbuild/protobuf";
import type { Command } from "@commander-js/extra-typings";
import { type NodeInfo, NodeState } from "../../proto/mod.ts";
import type { GlobalOptions } from "../client.ts";
import { palette } from "../format.ts";

/** "alive", "suspect", "dead", "left" or "unknown". */
export function stateName(s: NodeState): string {
  switch (s) {
    case NodeState.ALIVE:
      return "alive";
    case NodeState.SUSPECT:
      return "suspect";
    case NodeState.DEAD:
      return "dead";
    case NodeState.LEFT:
      return "left";
    default:
      return "unknown";
  }
}

/** Color a state word (padded or not) by what it means. */
export function paintState(word: string, padded = word): string {
  const p = palette();
  const w = word.trim();
  return w === "alive"
    ? p.green(padded)
    : w === "suspect"
    ? p.yellow(padded)
    : w === "dead"
    ? p.red(padded)
    : p.gray(padded);
}

/** "host:port" of a node's RPC listener. */
export function nodeEndpoint(n: NodeInfo): string {
  const host = n.addresses[0] ?? "127.0.0.1";
  return `${host.includes(":") ? `[${host}]` : host}:${n.rpcPort}`;
}

/** "[0,4)" or "—". */
export function rangeText(n: NodeInfo): string {
  return n.hosted ? `[${n.hosted.fromLayer},${n.hosted.toLayer})` : "—";
}

/** The wire message as proto3 JSON (int64 as strings, enum names, camelCase). */
export function wireJson<D extends DescMessage>(schema: D, msg: MessageShape<D>): unknown {
  return toJson(schema, msg, { alwaysEmitImplicit: true });
}

/** A subcommand's options merged with the program's global ones. */
export function globals(cmd: Command<unknown[], Record<string, unknown>>): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}
