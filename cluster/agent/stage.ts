/**
 * The agent's own stage: load the layer range placement gives it (fetching missing tensors of a
 * deployed model first), announce it in gossip once loaded, leave the plan when it cannot load,
 * and rebuild it on the WASM CPU backend when the GPU is lost.
 *
 * @module
 */
import { selectBackend } from "../../kernels/select.ts";
import { LlamaStage } from "../../model/llama.ts";
import { StageHost } from "../pipeline/mod.ts";
import type { AgentMetrics } from "../telemetry/mod.ts";
import type { AgentState } from "./state.ts";
import type { Observer } from "./observe.ts";

/** A layer range [from, to). */
export type LayerRange = { from: number; to: number };

/** Loads, announces and replaces this agent's stage. */
export class StageRoom {
  /** The range the current plan gives this agent (undefined: none). */
  plannedRange?: LayerRange;
  /** The load in progress (loads run one after another). */
  loading?: Promise<void>;
  private fallingBack = false;

  constructor(
    private readonly s: AgentState,
    private readonly observe: Observer,
    private readonly metrics: AgentMetrics,
    /** Asks the placement loop to plan again (after leaving the plan). */
    private readonly replanSoon: () => void,
  ) {}

  /** Plan says `want`: load it after any load in progress, unless it is already planned. */
  want(want: LayerRange | undefined): void {
    if (want?.from === this.plannedRange?.from && want?.to === this.plannedRange?.to) return;
    this.plannedRange = want;
    this.loading = (this.loading ?? Promise.resolve()).then(() => this.load(want));
  }

  /** Forget the planned range (the model is no longer served). */
  reset(): void {
    this.plannedRange = undefined;
  }

  /** Load (or drop) this agent's stage, then announce it in gossip. */
  private async load(want: LayerRange | undefined): Promise<void> {
    const s = this.s;
    if (s.stopped || !s.model) return;
    // A newer plan may have superseded this one while we waited.
    if (want?.from !== this.plannedRange?.from || want?.to !== this.plannedRange?.to) return;
    const old = s.stage;
    if (!want) {
      s.stage = undefined;
      old?.dispose();
      this.announce();
      if (old) this.observe.publishSelf(`${s.nodeId} dropped its layers`);
      return;
    }
    const t0 = performance.now();
    try {
      // A deployed model: fetch whatever this range misses into the cache first.
      // Gives up when a newer plan supersedes this range (the next load fetches its own).
      await s.transfer.ensure(s.model.id.toString(), want, () => this.plannedRange === want);
      if (!s.model || this.plannedRange !== want) return;
      const stage = await LlamaStage.load(s.model.file, s.backend, {
        ...want,
        maxBatch: s.config.batchSize,
      });
      s.stage = new StageHost(stage, s.model.id.toString(), {
        maxSessions: s.config.maxSessions,
        defaultContext: Math.min(s.config.contextSize, s.model.contextLength),
        onStep: (info) => this.metrics.onStageStep(info),
        onFailure: (e) => this.onStageFailure(e),
        prefixCacheBytes: s.config.prefixCache,
      });
      this.metrics.onModelLoad((performance.now() - t0) / 1000);
      // Free the previous range's weights: re-placement must not leak memory.
      old?.dispose();
      s.log("info", "stage loaded", {
        layers: `[${want.from},${want.to})`,
        bytes: stage.weightBytes,
        ms: Math.round(performance.now() - t0),
      });
      this.announce();
      this.observe.publishSelf(
        `${s.nodeId} loaded layers [${want.from},${want.to}) in ` +
          `${Math.round(performance.now() - t0)} ms`,
      );
    } catch (e) {
      s.log("error", "stage load failed", {
        layers: `[${want.from},${want.to})`,
        error: (e as Error).message,
      });
      if (this.plannedRange === want && !s.stopped) this.leaveAfterLoadFailure(want, e);
    }
  }

  /**
   * A stage that cannot load must not stay in the plan (heads would wait for layers nobody
   * serves): stop offering the model, as a drain does, and say why in gossip so every agent's
   * status shows it. Deploying the model again clears it.
   */
  private leaveAfterLoadFailure(range: LayerRange, e: unknown): void {
    const s = this.s;
    let reason = `layers [${range.from},${range.to}): ${(e as Error).message ?? e}`;
    // Gossip metadata strings are at most 255 bytes.
    while (new TextEncoder().encode(reason).length > 200) reason = reason.slice(0, -8);
    s.drained = true;
    s.gossip.updateMetadata({ ...s.gossip.localNode.meta!, model: "", stageError: reason });
    this.observe.planReason = `${s.nodeId} failed to load its stage`;
    this.observe.publishSelf(`${s.nodeId} failed to load ${reason}; placement routes around it`);
    this.replanSoon();
  }

  /**
   * A stage pass failed because the GPU is gone (device lost, out of memory): rebuild this
   * agent's stage on the WASM CPU backend instead of crashing. Requests in flight fail on this
   * stage; their heads replay them once the stage is back.
   */
  private onStageFailure(e: unknown): void {
    const s = this.s;
    if (this.fallingBack || s.backend.name !== "webgpu" || s.stopped) return;
    this.fallingBack = true;
    const range = this.plannedRange;
    s.log("error", "GPU lost; falling back to the WASM CPU backend", {
      error: (e as Error).message,
      layers: range ? `[${range.from},${range.to})` : null,
    });
    (async () => {
      const { backend } = await selectBackend("wasm", { threads: s.config.threads });
      const gpu = s.backend;
      const old = s.stage;
      s.stage = undefined;
      this.announce();
      old?.closeAll();
      gpu.dispose();
      s.backend = backend;
      s.backendReason = `fell back from WebGPU after: ${(e as Error).message}`.slice(0, 200);
      const meta = s.gossip.localNode.meta!;
      s.gossip.updateMetadata({
        ...meta,
        resources: {
          ...meta.resources,
          backend: backend.name,
          adapter: `${backend.device} — ${s.backendReason}`.slice(0, 240),
        },
      });
      this.plannedRange = range;
      await this.load(range);
    })().catch((err) => s.log("error", "CPU fallback failed", { error: String(err) }))
      .finally(() => (this.fallingBack = false));
  }

  /** Publish the hosted range in gossip metadata (a new alive with a higher incarnation). */
  announce(): void {
    const s = this.s;
    const meta = s.gossip.localNode.meta;
    if (!meta || s.stopped) return;
    s.gossip.updateMetadata({
      ...meta,
      hosted: s.stage
        ? { model: s.model!.id.toString(), from: s.stage.range.from, to: s.stage.range.to }
        : null,
    });
  }

  /** Drop the stage and free its weights (undeploy gives the memory back). */
  async drop(): Promise<void> {
    await this.loading?.catch(() => {});
    this.plannedRange = undefined;
    const old = this.s.stage;
    this.s.stage = undefined;
    old?.dispose();
  }
}
