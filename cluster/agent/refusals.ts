/**
 * Why a request is refused or cut off before it ends: the agent shutting down, an agent that
 * heads nothing (--no-model), the model replaced or undeployed under a running request. Each is
 * UNAVAILABLE (HTTP 503): another agent, or the same one later, can serve it.
 *
 * @module
 */
import { joinHostPort, type Member } from "../gossip/mod.ts";
import { RpcFailure } from "../rpc/mod.ts";
import type { ServedModel } from "./served_model.ts";

/** The abort reason of generations cut off by shutdown (they end with an error, not a finish). */
export const SHUTDOWN = new Error("the agent is shutting down");

/** What a request that has not started gets from agent `nodeId` once it is shutting down. */
export function shuttingDown(nodeId: string): RpcFailure {
  return new RpcFailure("unavailable", `${nodeId} is shutting down; ask another agent`);
}

/**
 * What an agent that serves no model (started with --no-model) tells a request it does not
 * forward (forward_rpc.ts, forward_http.ts: one already forwarded, or while no member is alive
 * and serving) when other `members` host layers: which agents to send it to. Before, it
 * answered "start it with --model", as if the cluster had no model. Undefined when no live or
 * suspect member hosts layers.
 */
export function servingElsewhere(members: readonly Member[], self: string): string | undefined {
  const hosts = members.filter((m) =>
    m.id !== self && m.meta?.hosted && (m.status === "alive" || m.status === "suspect")
  );
  if (hosts.length === 0) return undefined;
  const model = hosts[0].meta!.hosted!.model;
  const name = model.includes("@") ? model.slice(0, model.indexOf("@")) : model;
  const where = hosts.slice(0, 8).map((m) => {
    const meta = m.meta!;
    const api = meta.httpPort
      ? ` (HTTP ${joinHostPort(meta.addresses[0] ?? "?", meta.httpPort)})`
      : "";
    return `${m.id}${api}`;
  }).join(", ");
  return `${self} serves no model (started with --no-model: it routes gossip and deploys, and ` +
    `heads no request); the cluster serves ${name} on ${where}${
      hosts.length > 8 ? ` and ${hosts.length - 8} more` : ""
    }: send requests to one of them`;
}

/**
 * Why a request admitted on `admitted` can no longer be served, where the agent now serves
 * `now` (undefined: none): the model was replaced (`llmctl models deploy`) or undeployed. Its
 * chain's stages finish the sessions open on them (StageRoom.retire), but a request that loses
 * its chain after that has no model to replay on; it fails at once, as unavailable, instead of
 * waiting out the recovery timeout for layers no agent will load again.
 */
export function modelGone(
  admitted: ServedModel,
  now: ServedModel | undefined,
): RpcFailure | undefined {
  if (now === admitted) return undefined;
  // Other bytes under the same file name (a re-export deployed again): the ids tell them apart.
  const same = now?.id.name === admitted.id.name;
  const was = same ? admitted.id.toString() : admitted.id.name;
  const is = same ? now!.id.toString() : now?.id.name;
  return new RpcFailure(
    "unavailable",
    now
      ? `model ${was} was replaced by ${is} (llmctl models deploy) while this request ran; ` +
        `send it again for ${now.id.name}`
      : `model ${was} was undeployed (llmctl models undeploy) while this request ran; deploy ` +
        `a model with \`llmctl models deploy <file.gguf>\` and send it again`,
  );
}
