/**
 * Deploy, the deploying agent's side: get the signed manifest from the source node, plan the
 * placement over the targets' budgets and speeds, send Prepare to every target, and stream
 * their progress until the planned stages are loaded (or one fails). See manager.ts for the
 * whole flow.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  type DeployRequest,
  type DeployResponse,
  DeployResponseSchema,
  type GetManifestResponse,
  type Placement,
  type PrepareRequest,
  type TransferManifest,
  type TransferProgress,
  TransferProgressSchema,
  TransferState,
} from "../../proto/mod.ts";
import { type GGUFFile, openGGUF } from "../../model/gguf/mod.ts";
import { RpcFailure } from "../rpc/mod.ts";
import type { Entry } from "./entry.ts";
import type { TransferHost } from "./host.ts";
import type { TransferPeers } from "./peers.ts";
import { sleep } from "./rate.ts";

/** What a deploy needs of the transfer manager. */
export interface DeploySteps {
  readonly host: TransferHost;
  readonly peers: TransferPeers;
  /** GetManifest on this node. */
  getManifest(req: { path: string; model: string }): Promise<GetManifestResponse>;
  /** Verify a manifest answer (signature, CA). */
  open(answer: GetManifestResponse): Promise<{ manifest: TransferManifest; signature: string }>;
  /** This node's entry of a manifest, created on first sight. */
  entry(manifest: TransferManifest, answer: GetManifestResponse, signature: string): Entry;
  /** An entry's parsed GGUF header, fetched into the cache first. */
  header(e: Entry): Promise<GGUFFile>;
  /** Prepare on this node. */
  prepare(req: PrepareRequest): Promise<TransferProgress>;
  /** TransferStatus on this node. */
  status(): TransferProgress[];
}

/** Deploy: the deploying agent's side (see the module comment); yields progress. */
export async function* deployModel(
  m: DeploySteps,
  req: DeployRequest,
  signal: AbortSignal,
): AsyncIterable<DeployResponse> {
  if (!req.path) throw new RpcFailure("invalid_argument", "give the GGUF path to deploy");
  const sourceId = req.sourceNodeId || m.host.nodeId;
  const answer = req.sourceEndpoint
    ? await (await m.peers.clientAt(req.sourceEndpoint)).getManifest({ path: req.path }, {
      signal,
    })
    : sourceId === m.host.nodeId
    ? await m.getManifest({ path: req.path, model: "" })
    : await (await m.peers.client(sourceId)).getManifest({ path: req.path }, { signal });
  const { manifest, signature } = await m.open(answer);
  const e = m.entry(manifest, answer, signature);
  if (req.sourceEndpoint) e.external = req.sourceEndpoint;
  const alive = m.host.members().filter((m) => m.status === "alive").map((m) => m.id);
  const targets = req.nodes.length ? req.nodes : alive;
  for (const t of targets) {
    if (!alive.includes(t)) {
      throw new RpcFailure("not_found", `no alive member ${t}; see \`llmctl nodes list\``);
    }
  }
  // Agents plan over every live member offering the model: the targets, plus nodes already
  // serving it (a source started with --model). Plan over the same set, so they agree.
  const offering = m.host.members().filter((m) =>
    m.status === "alive" && m.model === manifest.modelId && !targets.includes(m.id)
  ).map((m) => m.id);
  const nodes = [...targets, ...offering];
  const index = e.path ? await openGGUF(e.path) : await m.header(e);
  let plan: Placement;
  try {
    plan = m.host.plan(index, manifest.modelId, nodes);
  } catch (err) {
    throw new RpcFailure(
      "failed_precondition",
      `${manifest.modelId} does not fit on ${targets.join(", ")}: ${(err as Error).message}`,
    );
  } finally {
    if (e.path) index.close();
  }
  yield create(DeployResponseSchema, { model: manifest.modelId, placement: plan, signature });
  const prepare = {
    manifest: answer,
    placement: plan,
    rateLimitBytesPerSecond: req.rateLimitBytesPerSecond,
    sourceEndpoint: req.sourceEndpoint,
  };
  await Promise.all(
    nodes.map(async (t) =>
      t === m.host.nodeId
        ? await m.prepare(prepare as PrepareRequest)
        : (await (await m.peers.client(t)).prepare(prepare, { signal })).progress
    ),
  );
  /** Targets gossip no longer lists (killed, partitioned): the others re-plan without them. */
  const gone = new Set<string>();
  /** Since when the loaded stages have tiled the model (0: they do not). */
  let tiledSince = 0;
  for (;;) {
    const listed = new Set(
      m.host.members().filter((x) => x.status === "alive" || x.status === "suspect").map((x) =>
        x.id
      ),
    );
    for (const t of nodes) if (t !== m.host.nodeId && !listed.has(t)) gone.add(t);
    const progress = await Promise.all(
      nodes.filter((t) => !gone.has(t)).map((t) =>
        m.peers.progress(t, manifest, signal, () => m.status())
      ),
    );
    const failed = progress.filter((n) => n.state === TransferState.FAILED);
    // Done: nothing is fetching, and the loaded stages tile the model's layers (a node that
    // left neither fetches nor fails: it would keep this waiting forever).
    const idle = progress.every((n) =>
      n.state !== TransferState.FETCHING && n.state !== TransferState.PENDING
    );
    for (const t of gone) {
      progress.push(create(TransferProgressSchema, {
        nodeId: t,
        model: manifest.modelId,
        state: TransferState.PENDING,
        detail: "left the cluster during the deploy",
      }));
    }
    const ranges = progress.filter((n) => n.state === TransferState.LOADED)
      .map((n) => [n.fromLayer, n.toLayer]).sort((a, b) => a[0] - b[0]);
    let at = 0;
    for (const [f, t] of ranges) if (f === at) at = t;
    const tiled = idle && plan.totalLayers > 0 && at === plan.totalLayers;
    tiledSince = tiled ? tiledSince || Date.now() : 0;
    // Done when every planned node has loaded its layers. A tiling alone took the source's stage
    // of the previous placement ([0, 5) on one node) for the deploy's: "deployed" came while the
    // planned nodes held only the bytes, and a generate right after it ran on the old plan. A
    // plan that moved during the deploy can leave a planned node with no layers: a tiling that
    // has held for PLAN_SETTLE_MS is then taken, as is one without a node that left.
    const planned = plan.stages.every((st) =>
      progress.some((n) => n.nodeId === st.nodeId && n.state === TransferState.LOADED)
    );
    const loaded = tiled &&
      (planned || gone.size > 0 || Date.now() - tiledSince >= PLAN_SETTLE_MS);
    if (failed.length || loaded || signal.aborted) {
      yield create(DeployResponseSchema, {
        model: manifest.modelId,
        nodes: progress,
        placement: plan,
        done: true,
        signature,
        message: failed.length
          ? `deploy of ${manifest.modelId} failed on ${
            failed.map((n) => `${n.nodeId}: ${n.detail}`).join("; ")
          }`
          : gone.size
          ? `deployed ${manifest.modelId}; ${[...gone].join(", ")} left during the deploy, ` +
            `and the others hold: ` +
            progress.filter((n) => n.state === TransferState.LOADED)
              .map((n) => `${n.nodeId}:[${n.fromLayer},${n.toLayer})`).join(" ")
          : `deployed ${manifest.modelId} on ${plan.stages.length} node(s): ` +
            plan.stages.map((s) => `${s.nodeId}:[${s.fromLayer},${s.toLayer})`).join(" "),
      });
      if (failed.length) {
        throw new RpcFailure(
          "aborted",
          `deploy failed on ${failed.map((n) => n.nodeId).join(", ")}`,
        );
      }
      return;
    }
    yield create(DeployResponseSchema, { model: manifest.modelId, nodes: progress, signature });
    await sleep(300, signal);
  }
}

/** How long a tiling of loaded stages must hold to end a deploy whose planned nodes moved. */
const PLAN_SETTLE_MS = 10_000;
