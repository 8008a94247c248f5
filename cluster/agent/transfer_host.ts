/**
 * What model distribution (cluster/transfer) needs from the agent: members and their endpoints,
 * the served model, the hosted range, plans for a deploy, and adopting or dropping a model.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { PlacementSchema, StageAssignmentSchema, type TransferProgress } from "../../proto/mod.ts";
import { planReplicas, stageWeightBytes } from "../placement/mod.ts";
import { fileMtime, type TransferHost } from "../transfer/mod.ts";
import { rpcEndpoint } from "./peers.ts";
import { checkAnnouncementFits } from "./lifecycle.ts";
import { agreedReplicas, placementInputs, type PlacementLoop } from "./placement_loop.ts";
import { agentFootprint, agreedKvReserve, type ServedModel, servedModel } from "./served_model.ts";
import { ModelId } from "../model_id.ts";
import type { AgentState } from "./state.ts";
import type { Observer } from "./observe.ts";
import type { StageRoom } from "./stage.ts";

/** The agent's side of model distribution. */
export function transferHost(
  s: AgentState,
  loop: PlacementLoop,
  stage: StageRoom,
  observe: Observer,
): TransferHost {
  /**
   * Stop serving `model`, its stage already dropped (its sessions finish on it). Synchronous, so
   * that adopt puts the next model in its place with no moment in between: a request that lost
   * its chain then would be told its model was undeployed rather than replaced.
   */
  const forget = (model: ServedModel) => {
    s.model = undefined;
    s.modelPath = undefined;
    s.modelSha = undefined;
    s.modelMtime = undefined;
    s.undeployed = model.id;
    loop.reset();
    s.gossip.updateMetadata({ ...s.gossip.localNode.meta!, model: "", hosted: null });
    model.file.close();
    s.log("info", "model undeployed", { model: model.id.toString() });
    observe.publishSelf(`${s.nodeId} undeployed ${model.id}`);
  };
  const unserve = async (id: string): Promise<boolean> => {
    const model = s.model;
    if (!model || model.id.toString() !== id) return false;
    await stage.drop();
    // Another deploy or undeploy finished first while the stage's load ended.
    if (s.model !== model) return false;
    forget(model);
    return true;
  };
  return {
    nodeId: s.nodeId,
    members: () =>
      s.gossip.members().filter((m) => m.meta).map((m) => ({
        id: m.id,
        endpoint: rpcEndpoint(m),
        model: m.meta!.model ?? "",
        status: m.status,
      })),
    served: () =>
      s.model && {
        id: s.model.id.toString(),
        path: s.modelPath,
        sha256: s.modelSha,
        mtimeMs: s.modelMtime,
      },
    hostedRange: () => s.stage && { ...s.stage.range },
    plan: (file, modelId, nodes) => {
      // The plan the agents' placement loops will make: same inputs (what each node hosts now,
      // so a standby deployed to after a loss is told the lost stage's layers, not a re-spread)
      // and the replica count they agree on. Each node finds its range by id, so the replicas'
      // stages travel as one list.
      const members = s.gossip.members().filter((m) => nodes.includes(m.id));
      const own = { context: s.config.contextSize, sessions: s.config.maxSessions };
      const kv = agreedKvReserve(members, own);
      const fp = agentFootprint(file, kv.context, kv.sessions);
      const plan = planReplicas(fp, placementInputs(members, modelId), agreedReplicas(members));
      return create(PlacementSchema, {
        model: modelId,
        totalLayers: fp.nLayers,
        stages: plan.replicas.flatMap((r) => r.stages).map((st) =>
          create(StageAssignmentSchema, { nodeId: st.nodeId, fromLayer: st.from, toLayer: st.to })
        ),
      });
    },
    adopt: async (id, file, path, sha256) => {
      if (s.model?.id.toString() === id && (!sha256 || s.modelSha === sha256)) return;
      try {
        checkAnnouncementFits(s.gossip.localNode.meta!, id);
      } catch (e) {
        file.close();
        throw e;
      }
      const next = servedModel(ModelId.parse(id), file, s.config.contextSize, s.config.maxSessions);
      const mtime = path ? await fileMtime(path) : undefined;
      // The stage retires: requests running on the model this one replaces finish there.
      if (s.model) await stage.drop();
      if (s.model) forget(s.model);
      s.model = next;
      s.undeployed = undefined;
      s.modelPath = path;
      s.modelSha = sha256;
      s.modelMtime = mtime;
      s.drained = false;
      observe.planReason = `model ${id} deployed`;
      s.gossip.updateMetadata({
        ...s.gossip.localNode.meta!,
        model: id,
        stageError: "",
        drained: false,
      });
      s.log("info", "serving a deployed model", { model: id, path: path ?? "(cache)" });
      loop.schedule();
    },
    beforeFetch: (model, file, range) => {
      // A node hosting nothing yet that joins a cluster already serving the model (a standby
      // taking a lost stage) faults its memory in and loads the layers as they arrive: being
      // ready sooner is what counts then, and faulting fresh VM memory costs seconds per GB here.
      // Not in a first deploy: every fetcher would, the faults and copies compete with the
      // transfer for the cores (a first 8B deploy on 2 cores fell from 181 to 106-143 MB/s, its
      // fetchers' peak RSS rose by their receive buffers), and the last stage to load sets its
      // readiness anyway. Nor with layers at hand (faulting and loading only compete then).
      if (s.stage) return;
      const serving = s.gossip.members().some((m) =>
        m.id !== s.nodeId && m.meta?.hosted?.model === model
      );
      if (!serving) return;
      if (s.backend.prefault) {
        const fp = agentFootprint(file, s.config.contextSize, s.config.maxSessions);
        const bytes = stageWeightBytes(fp, range.from, range.to);
        s.log("debug", "faulting in the stage's memory during the fetch", {
          layers: `[${range.from},${range.to})`,
          bytes,
        });
        s.backend.prefault(bytes).catch(() => {});
      }
      stage.preload(model, file, range);
    },
    unserve,
    publish: (value: TransferProgress) => s.events.publish({ case: "transfer", value }),
    log: (level, msg, f) => s.log(level, msg, f),
  };
}
