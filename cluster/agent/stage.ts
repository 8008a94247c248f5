/**
 * The agent's own stage: load the layer range placement gives it (fetching missing tensors of a
 * deployed model first), announce it in gossip once loaded, leave the plan when it cannot load,
 * and rebuild it on the WASM CPU backend when the GPU is lost.
 *
 * @module
 */
import { selectBackend } from "../../kernels/select.ts";
import { LlamaStage } from "../../model/llama.ts";
import type { GGUFFile } from "../../model/gguf/mod.ts";
import { StageHost } from "../pipeline/mod.ts";
import type { AgentMetrics } from "../telemetry/mod.ts";
import type { AgentState } from "./state.ts";
import type { Observer } from "./observe.ts";
import { kvBudgetWarning, stageKvLimit } from "./kv_budget.ts";

/** A layer range [from, to). */
export type LayerRange = { from: number; to: number };

/** How long a replaced stage serves the sessions opened on it before they are closed. */
const RETIRE_MS = 30_000;

/** How often a stage publishes its load in gossip (each publication is a metadata update). */
export const LOAD_PUBLISH_MS = 1000;

/** Loads, announces and replaces this agent's stage. */
export class StageRoom {
  /** The range the current plan gives this agent (undefined: none). */
  plannedRange?: LayerRange;
  /** The replica the plan puts this agent in: its first stage's node id. */
  plannedReplica?: string;
  /**
   * The replica the hosted stage was planned in, which it announces. Not plannedReplica: a load
   * that a newer plan superseded ends with the old range, and announcing that range under the
   * new plan's replica makes a pairing no plan made (replica planning reads it back).
   */
  private hostedReplica?: string;
  /** Token rows the hosted stage processed since the last load publication. */
  private rows = 0;
  private rowsSince = performance.now();
  private loadTimer?: ReturnType<typeof setInterval>;
  /** Replaced stages still serving the sessions opened on them, with their next check. */
  private readonly retiring = new Map<StageHost, ReturnType<typeof setTimeout>>();
  /** The load in progress (loads run one after another). */
  loading?: Promise<void>;
  private fallingBack = false;
  /** A stage loading while its layers are fetched, before the plan gives them (preload). */
  private early?: { model: string; range: LayerRange; stage: Promise<LlamaStage> };

  constructor(
    private readonly s: AgentState,
    private readonly observe: Observer,
    private readonly metrics: AgentMetrics,
    /** Asks the placement loop to plan again (after leaving the plan). */
    private readonly replanSoon: () => void,
  ) {}

  /**
   * Plan says `want` in replica `replica`: load it after any load in progress, unless it is
   * already planned. The same range in another replica is only announced anew.
   */
  want(want: LayerRange | undefined, replica?: string): void {
    const replicaChanged = replica !== this.plannedReplica;
    this.plannedReplica = replica;
    if (want?.from === this.plannedRange?.from && want?.to === this.plannedRange?.to) {
      if (replicaChanged) {
        this.loading = (this.loading ?? Promise.resolve()).then(() => {
          const r = this.s.stage?.range;
          if (r && r.from === want?.from && r.to === want?.to) this.hostedReplica = replica;
          this.announce();
        });
      }
      return;
    }
    this.plannedRange = want;
    this.loading = (this.loading ?? Promise.resolve()).then(() => this.load(want, replica));
  }

  /** Forget the planned range (the model is no longer served). */
  reset(): void {
    this.plannedRange = undefined;
  }

  /** Load (or drop) this agent's stage, planned in `replica`, then announce it in gossip. */
  private async load(want: LayerRange | undefined, replica?: string): Promise<void> {
    const s = this.s;
    if (s.stopped || !s.model) return;
    const model = s.model;
    // Shutting down: no new layers (agents stopping together would load each other's handed
    // over layers while they drain); dropping the stage still goes ahead.
    if (s.draining && want) return;
    // A newer plan may have superseded this one while we waited.
    if (want?.from !== this.plannedRange?.from || want?.to !== this.plannedRange?.to) return;
    const old = s.stage;
    // Planned away and back (a plan in transition) before the other range loaded: the stage
    // already serves this range; loading it again would hold its weights twice for a while.
    if (want && old && old.range.from === want.from && old.range.to === want.to) {
      this.hostedReplica = replica;
      this.announce();
      return;
    }
    if (!want) {
      s.stage = undefined;
      this.hostedReplica = undefined;
      if (old) this.retire(old);
      this.announce();
      if (old) this.observe.publishSelf(`${s.nodeId} dropped its layers`);
      return;
    }
    const t0 = performance.now();
    try {
      // A deployed model: fetch whatever this range misses into the cache first.
      // Gives up when a newer plan supersedes this range (the next load fetches its own).
      await s.transfer.ensure(s.model.id.toString(), want, () => this.plannedRange === want);
      if (!s.model || this.plannedRange !== want) {
        this.dropEarly();
        return;
      }
      const early = this.takeEarly(s.model.id.toString(), want);
      const options = { ...want, maxBatch: s.config.batchSize };
      const preloaded = await early?.catch(() => undefined);
      const stage = preloaded ?? await LlamaStage.load(s.model.file, s.backend, options);
      // Superseded while it loaded (a suspicion refuted, a plan that moved on): keep the stage
      // that serves now, so a plan that went away and back costs one wasted load, not a second
      // load of the range that was already here.
      if (this.plannedRange !== want) {
        stage.dispose();
        return;
      }
      const context = Math.min(s.config.contextSize, s.model.contextLength);
      const kvLimitBytes = stageKvLimit(s.config, stage.weightBytes);
      s.stage = new StageHost(stage, s.model.id.toString(), {
        maxSessions: s.config.maxSessions,
        defaultContext: context,
        // The budget holds the weights and the sessions' KV caches: admission keeps them in it.
        kvLimitBytes,
        onStep: (info) => {
          this.metrics.onStageStep(info);
          this.rows += info.rows;
        },
        onFailure: (e) => this.onStageFailure(e),
        prefixCacheBytes: s.config.prefixCache,
        sliceRows: s.config.prefillChunk,
        // Requests this agent heads stream their tokens from this process.
        clientsStreaming: () => s.counters.activeRequests > 0,
      });
      this.metrics.onModelLoad((performance.now() - t0) / 1000);
      // A budget below one block of these layers keeps nothing: say so, rather than run as if
      // the flag were 0 while the bytes are still taken out of the budget placement is offered.
      const cache = stage.prefixCache;
      if (cache && !cache.enabled) {
        s.log("warn", "prefix cache off", {
          why: `--prefix-cache ${s.config.prefixCache} bytes hold no ${cache.blockTokens}-token ` +
            `block of layers [${want.from},${want.to}) (${cache.blockBytes} bytes); give it at ` +
            `least that, or 0`,
        });
      }
      const tight = kvBudgetWarning({
        limitBytes: kvLimitBytes,
        sessionBytes: stage.kvBytes(context),
        maxSessions: s.config.maxSessions,
        context,
      });
      if (tight) s.log("warn", "KV budget", { layers: `[${want.from},${want.to})`, why: tight });
      this.refused = 0;
      this.hostedReplica = replica;
      // Free the previous range's weights: re-placement must not leak memory.
      if (old) this.retire(old);
      s.log("info", "stage loaded", {
        layers: `[${want.from},${want.to})`,
        bytes: stage.weightBytes,
        ms: Math.round(performance.now() - t0),
        // Loaded as its layers arrived (preload), not after the fetch.
        duringFetch: preloaded !== undefined,
      });
      this.announce();
      this.observe.publishSelf(
        `${s.nodeId} loaded layers [${want.from},${want.to}) in ` +
          `${Math.round(performance.now() - t0)} ms`,
      );
    } catch (e) {
      // A newer plan, another deployed model or shutdown cancelled it (its fetch ends "the
      // transfer was cancelled"): the ordinary course of a re-plan, not a failure to report.
      const superseded = this.plannedRange !== want || s.stopped || s.model !== model;
      s.log(
        superseded ? "info" : "error",
        superseded ? "stage load superseded" : "stage load failed",
        {
          layers: `[${want.from},${want.to})`,
          error: (e as Error).message,
        },
      );
      if (!superseded) this.leaveAfterLoadFailure(want, e);
    }
  }

  /**
   * Free a replaced stage once the frames it is running are done. Sessions opened on it keep
   * their host (Forward streams and local links hold it), so generations that started under the
   * previous plan finish there instead of meeting freed weights; new sessions open on the new
   * stage. After RETIRE_MS it is freed at its next idle moment even with sessions open: their
   * next frames fail as "not open" and their heads replay them on the new plan.
   */
  private retire(old: StageHost): void {
    const until = performance.now() + RETIRE_MS;
    const check = () => {
      this.retiring.delete(old);
      // pending 0: no frame is queued or in a pass, and nothing else runs until dispose returns
      // (closing a session with a frame queued would free the KV cache that frame is about to use).
      if (old.pending === 0 && (old.openSessions === 0 || performance.now() > until)) {
        return old.dispose();
      }
      this.retiring.set(old, setTimeout(check, 20));
    };
    check();
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
      await this.load(range, this.plannedReplica);
    })().catch((err) => s.log("error", "CPU fallback failed", { error: String(err) }))
      .finally(() => (this.fallingBack = false));
  }

  /**
   * Publish the hosted range, its replica and its load in gossip metadata (a new alive with a
   * higher incarnation).
   */
  announce(): void {
    const s = this.s;
    const meta = s.gossip.localNode.meta;
    if (!meta || s.stopped) return;
    s.gossip.updateMetadata({
      ...meta,
      hosted: s.stage
        ? { model: s.model!.id.toString(), from: s.stage.range.from, to: s.stage.range.to }
        : null,
      replica: s.stage ? this.hostedReplica ?? "" : "",
      load: this.currentLoad(),
    });
    this.loadTimer ??= setInterval(() => this.publishLoad(), LOAD_PUBLISH_MS);
    Deno.unrefTimer(this.loadTimer);
  }

  /** The hosted stage's load now: what heads choosing a replica read. */
  private currentLoad() {
    const s = this.s;
    const now = performance.now();
    const secs = (now - this.rowsSince) / 1000;
    const tps = secs > 0 ? this.rows / secs : 0;
    this.rows = 0;
    this.rowsSince = now;
    const sessions = s.stage?.openSessions ?? 0;
    return {
      sessions,
      queued: s.stage?.pending ?? 0,
      // By count and by KV bytes: a replica whose budget is spent is not offered as free.
      free: s.stage?.freeSlots ?? 0,
      tokensPerSecond: Math.round(tps * 10) / 10,
    };
  }

  /**
   * Publish the load when it changed: an idle stage sends nothing, a busy one about once per
   * LOAD_PUBLISH_MS (heads add what they sent since, see ReplicaLedger).
   */
  private publishLoad(): void {
    const s = this.s;
    const meta = s.gossip.localNode.meta;
    if (!meta || s.stopped) {
      clearInterval(this.loadTimer);
      this.loadTimer = undefined;
      return;
    }
    if (!s.stage) return;
    this.logRefusals(s.stage);
    const load = this.currentLoad();
    const was = meta.load;
    if (
      was && was.sessions === load.sessions && was.queued === load.queued &&
      was.free === load.free && was.tokensPerSecond === load.tokensPerSecond
    ) return;
    s.gossip.updateMetadata({ ...meta, load });
  }

  /** Sessions the hosted stage refused as of the last log line (logRefusals). */
  private refused = 0;

  /**
   * Log the sessions the stage refused since the last load publication, by reason, so a stage
   * turning requests away as busy says why (at most one line per LOAD_PUBLISH_MS).
   */
  private logRefusals(stage: StageHost): void {
    const by = stage.refusals;
    const total = by.sessions + by.kv_bytes + by.memory;
    if (total === this.refused) return;
    this.s.log("warn", "stage refused sessions as busy", {
      since: total - this.refused,
      ...by,
      open: stage.openSessions,
      kvBytes: stage.memoryBytes.kvCache,
    });
    this.refused = total;
  }

  /**
   * Sessions open on this agent's stages: the hosted one's and those of replaced stages still
   * serving what was opened on them (a drain waits for both).
   */
  get openSessions(): number {
    let n = this.s.stage?.openSessions ?? 0;
    for (const old of this.retiring.keys()) n += old.openSessions;
    return n;
  }

  /** Stop publishing load and free replaced stages (shutdown: their sessions end anyway). */
  stop(): void {
    clearInterval(this.loadTimer);
    this.loadTimer = undefined;
    for (const [old, timer] of this.retiring) {
      clearTimeout(timer);
      old.closeAll();
    }
    this.retiring.clear();
  }

  /**
   * Start loading layers `range` of model `model` (read from `file`) on an agent that hosts
   * nothing yet, while a deploy fetches them: the cache hands each tensor over as its chunks
   * arrive, so the stage is loaded when the fetch ends instead of starting to load then (a
   * standby taking a lost stage saved its whole load time, 1-1.5 s for an 8B model's 1.2-1.6 GB).
   * The plan's load takes it when it gives this range; another range frees it.
   */
  preload(model: string, file: GGUFFile, range: LayerRange): void {
    const s = this.s;
    if (s.stopped || s.stage || this.early) return;
    s.log("debug", "loading the stage's layers as they arrive", {
      layers: `[${range.from},${range.to})`,
    });
    const stage = LlamaStage.load(file, s.backend, { ...range, maxBatch: s.config.batchSize });
    stage.catch((e) =>
      s.log("warn", "loading layers during their fetch failed; they load after it", {
        layers: `[${range.from},${range.to})`,
        error: (e as Error).message,
      })
    );
    this.early = { model, range, stage };
  }

  /** The preloaded stage if it is `range` of `model`; any other is freed. */
  private takeEarly(model: string, range: LayerRange): Promise<LlamaStage> | undefined {
    const e = this.early;
    if (e?.model !== model || e.range.from !== range.from || e.range.to !== range.to) {
      this.dropEarly();
      return undefined;
    }
    this.early = undefined;
    return e.stage;
  }

  /** Free a preloaded stage (once its load has ended). */
  private dropEarly(): void {
    this.early?.stage.then((st) => st.dispose(), () => {});
    this.early = undefined;
  }

  /**
   * Drop the stage (the model is undeployed or replaced): it takes no new session, and its
   * weights are freed once the sessions open on it end (retire: at most RETIRE_MS), so requests
   * running on the model finish on it rather than failing mid-answer. Freed at once when idle.
   */
  async drop(): Promise<void> {
    this.dropEarly();
    await this.loading?.catch(() => {});
    this.plannedRange = undefined;
    const old = this.s.stage;
    this.s.stage = undefined;
    if (old) this.retire(old);
  }
}
