/**
 * Shared pieces of the commands that show the cluster: state names and colors, a node's
 * endpoint, JSON of wire messages, and reading the global options from a subcommand.
 */
import { type DescMessage, type MessageShape, ScalarType, toJson } from "@bufbuild/protobuf";
import type { Command } from "@commander-js/extra-typings";
import { type NodeInfo, NodeState } from "../../proto/mod.ts";
import type { GlobalOptions } from "../client.ts";
import { palette } from "../format.ts";
import { joinHostPort } from "../../cluster/net/mod.ts";

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
  return joinHostPort(host, n.rpcPort);
}

/** "[0,4)", "—" (none), or either marked drained ("[0,4) drained", "drained"). */
export function rangeText(n: NodeInfo): string {
  const range = n.hosted ? `[${n.hosted.fromLayer},${n.hosted.toLayer})` : "";
  // Drained: alive, but its layers moved elsewhere until the model is deployed again.
  if (n.drained) return range ? `${range} drained` : "drained";
  return range || "—";
}

/**
 * A wire message as `--json` prints it, in the one style of every llmctl JSON output: the
 * .proto's snake_case field names, every field present, and 64-bit integers as JSON numbers
 * (proto3 JSON would make them strings; counts and bytes here stay far below 2^53).
 */
export function wireJson<D extends DescMessage>(schema: D, msg: MessageShape<D>): unknown {
  const json = toJson(schema, msg, { alwaysEmitImplicit: true, useProtoFieldName: true });
  return numbers64(schema, json);
}

const INT64 = new Set([
  ScalarType.INT64,
  ScalarType.UINT64,
  ScalarType.SINT64,
  ScalarType.FIXED64,
  ScalarType.SFIXED64,
]);

/** `json` (of message `desc`) with its 64-bit integer strings turned into numbers. */
function numbers64(desc: DescMessage, json: unknown): unknown {
  if (typeof json !== "object" || json === null) return json;
  const obj = json as Record<string, unknown>;
  for (const f of desc.fields) {
    const v = obj[f.name];
    if (v === undefined || v === null) continue;
    if (f.fieldKind === "scalar" && INT64.has(f.scalar)) obj[f.name] = Number(v);
    else if (f.fieldKind === "message") numbers64(f.message, v);
    else if (f.fieldKind === "list" && f.listKind === "scalar" && INT64.has(f.scalar)) {
      obj[f.name] = (v as unknown[]).map(Number);
    } else if (f.fieldKind === "list" && f.listKind === "message") {
      for (const x of v as unknown[]) numbers64(f.message, x);
    } else if (f.fieldKind === "map" && f.mapKind === "message") {
      for (const x of Object.values(v as object)) numbers64(f.message, x);
    } else if (f.fieldKind === "map" && f.mapKind === "scalar" && INT64.has(f.scalar)) {
      for (const [k, x] of Object.entries(v as object)) {
        (v as Record<string, unknown>)[k] = Number(x);
      }
    }
  }
  return obj;
}

/** A subcommand's options merged with the program's global ones. */
export function globals(cmd: Command<unknown[], Record<string, unknown>>): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}
