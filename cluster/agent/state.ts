/**
 * What every room of the agent shares: configuration, the gossip handle, the backend, the
 * served model and hosted stage, lifecycle flags and counters. Rooms read and change it; only
 * the room named in each field's comment writes that field.
 *
 * @module
 */
import type { Backend } from "../../kernels/backend.ts";
import type { AgentConfig } from "../agent_config.ts";
import type { Memberlist } from "../gossip/mod.ts";
import { ReplySinks, type StageHost } from "../pipeline/mod.ts";
import { EventHub, type LeveledLog, MembershipTracker } from "../events/mod.ts";
import type { Admission } from "../api/mod.ts";
import type { TransferManager } from "../transfer/mod.ts";
import type { ServedModel } from "./served_model.ts";
import type { ModelId } from "../model_id.ts";

/** Structured log line sink. */
export type AgentLogger = (
  level: "debug" | "info" | "warn" | "error",
  msg: string,
  fields?: Record<string, unknown>,
) => void;

/** The agent's shared state. */
export class AgentState {
  /** The served model (placement loop and transfer adopt/unserve change it). */
  model?: ServedModel;
  /**
   * The model this agent served until it was undeployed (transfer unserve; cleared when a model
   * is served again): a request is told that, and where to deploy one, rather than that the
   * agent was started without a model.
   */
  undeployed?: ModelId;
  /** The local file the served model was opened from (a source for peers), if any. */
  modelPath?: string;
  /** The sha256 of the served model's bytes, where a deploy's manifest told it. */
  modelSha?: string;
  /** The served local file's mtime when it was opened (ms; a file changed since is other bytes). */
  modelMtime?: number;
  /** The stage hosted now (stage room). */
  stage?: StageHost;
  /** Stopped: listeners are closing (lifecycle). */
  stopped = false;
  /** SIGTERM arrived: new requests are refused while those in flight finish (lifecycle). */
  draining = false;
  /** Drained or failed to load: this node offers no layers any more (commands, stage room). */
  drained = false;
  /**
   * Set while a live member elsewhere holds this agent's node id (lifecycle: the join was
   * refused): the message saying so. Such an agent is no member: it plans and hosts nothing,
   * and refuses requests and readiness with this message, until a join succeeds or it gives up.
   */
  idConflict?: string;
  /** LAN multicast discovery, while `--discover` runs it (lifecycle stops it before leaving). */
  discovery?: { stop(): void };
  /** Generations this agent heads, by request id (head service). */
  readonly requests = new Map<string, AbortController>();
  /**
   * Members whose RPC endpoint this agent could not verify over mTLS (a certificate from another
   * CA), with the TLS error (peers). They are left out of placement and chains, as a dead
   * member's layers are, until a later announcement of theirs verifies.
   */
  readonly untrusted = new Map<string, string>();
  /** When each member's state last changed as this agent saw it, Unix ms (observe). */
  readonly stateChangedAt = new Map<string, number>();
  /** Reply streams heads opened to this agent as a tail (data plane; pipeline/replies.ts). */
  readonly replies = new ReplySinks();
  /** Cluster events for ClusterService.StreamUpdates (llmctl, the TUI). */
  readonly events = new EventHub({ history: 256 });
  /** Membership changes as events. */
  readonly memberEvents = new MembershipTracker(this.events);
  /** Counters for metrics and health. */
  readonly counters = {
    activeRequests: 0,
    tokensGeneratedTotal: 0,
    framesProcessedTotal: 0,
    recoveries: 0,
  };
  /** Generation slots this agent heads, and the queue in front of them. */
  admission!: Admission;
  /** Model distribution (cluster/transfer). */
  transfer!: TransferManager;
  /** Unix seconds the agent started (the `created` of /v1/models). */
  readonly startedAt = Math.floor(Date.now() / 1000);

  constructor(
    readonly config: AgentConfig,
    /** The compute backend; the stage room swaps it on a GPU fallback. */
    public backend: Backend,
    /** Why the backend was chosen (or fallen back to). */
    public backendReason: string,
    /** Start-up calibration, GFLOP/s. */
    readonly speed: number,
    readonly gossip: Memberlist,
    readonly log: AgentLogger,
    /** The run-time log level (ClusterService set_log_level). */
    readonly leveled: LeveledLog,
  ) {}

  /** This node's id. */
  get nodeId(): string {
    return this.config.nodeId;
  }

  /** Layers hosted now (0 when none). */
  get hostedLayers(): number {
    return this.stage ? this.stage.range.to - this.stage.range.from : 0;
  }
}
