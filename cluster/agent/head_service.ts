/**
 * The head role: a request this agent received is admitted, tokenized, run by a Head over the
 * chain gossip announces (this agent's own stage in-process, the others over RPC), and streamed
 * as plain engine events. Protobuf appears only at the RPC edge (inference_rpc.ts); the OpenAI
 * API reads the same events (api_adapter.ts).
 *
 * @module
 */
import { jsonConstraintFor, type SchemaNode } from "../../model/constrain/mod.ts";
import type { Tokenizer } from "../../model/tokenizer/mod.ts";
import {
  type ChatMessage,
  promptClosesReasoning,
  promptOpensReasoning,
  THINK_CLOSE,
  THINK_OPEN,
  type ToolDef,
  toolMarkers,
} from "../../model/chat/mod.ts";
import type { Member } from "../gossip/mod.ts";
import {
  type ChainHop,
  GossipChainProvider,
  Head,
  LocalStageLink,
  PrefixRoutes,
  ReplicaLedger,
  type SampledToken,
  type StageLink,
  StaleEpochError,
  type TailSampling,
} from "../pipeline/mod.ts";
import { RpcFailure } from "../rpc/mod.ts";
import {
  InvalidParamError,
  MAX_STOP_CHARS,
  MAX_STOP_STRINGS,
  PromptTooLongError,
  StopGate,
} from "../api/mod.ts";
import { RequestPhase } from "../../proto/mod.ts";
import { RequestTracker } from "../events/mod.ts";
import type { AgentMetrics } from "../telemetry/mod.ts";
import type { AgentState } from "./state.ts";
import type { PlacementLoop } from "./placement_loop.ts";
import type { Peers } from "./peers.ts";
import type { ServedModel } from "./served_model.ts";
import { longestPieceBytes, markerDecoder, utf8Length } from "./decoding.ts";

/** Longest client-chosen request id (GenerateRequest.request_id). */
export const MAX_REQUEST_ID_CHARS = 256;
import { LazyRemoteLink } from "./lazy_link.ts";
import { modelGone, servingElsewhere, SHUTDOWN, shuttingDown } from "./refusals.ts";

/** What to generate, in engine terms. */
export interface HeadParams {
  /** Model name as the client sent it ("" = the served one). */
  model?: string;
  /** Raw prompt; exactly one of prompt, promptTokens and messages. */
  prompt?: string;
  /** The prompt as token ids, fed as given (no BOS added). */
  promptTokens?: number[];
  /** Chat turns (with their tool calls and results), rendered with the model's chat template. */
  messages?: ChatMessage[];
  /** Tools offered (chat): rendered by the template, their markers decoded as text. */
  tools?: ToolDef[];
  /** Text after the rendered chat's assistant turn opener (a forced tool call's opener). */
  assistantPrefix?: string;
  /** Extra chat template variables (checked by checkTemplateKwargs), e.g. `enable_thinking`. */
  chatTemplateKwargs?: Record<string, unknown>;
  /**
   * Called once a chat is rendered, before any event: whether the prompt left a think block
   * open (the output then starts as reasoning).
   */
  onRendered?: (info: { reasoningOpen: boolean }) => void;
  /** Most tokens to generate; 0 or undefined = until end of sequence or the context is full. */
  maxTokens?: number;
  /** Tail sampling; unset fields take SAMPLING_DEFAULTS at the tail. */
  sampling: TailSampling;
  /**
   * Hold the output to this JSON shape: bound to the model's vocabulary and the prompt's length
   * here, sent to the tail with the sampling settings.
   */
  jsonSchema?: SchemaNode;
  /**
   * With jsonSchema and a thinking template: the JSON constraint starts after the output's think
   * block (model/constrain/after_reasoning.ts), not at its first token.
   */
  jsonAfterReasoning?: boolean;
  /** Stop strings, cut from the output. */
  stop?: string[];
  /** Client-chosen id for Cancel and logs. */
  requestId?: string;
  /**
   * Called once the request is checked and has a slot or a place in line: the HTTP API answers
   * a stream's status then, not at its first token (which a queue or a long prompt delays).
   */
  onAccepted?: () => void;
}

/** One stage that served a request. */
export interface ServedStage {
  nodeId: string;
  from: number;
  to: number;
}

/** A sampled token with the text it adds. */
export interface HeadTokenEvent {
  kind: "token";
  requestId: string;
  /**
   * The model the request was admitted on: its vocabulary is the token's (the agent may serve
   * another by now, deployed while the request finishes on the stages that hold this one).
   */
  model: ServedModel;
  index: number;
  token: SampledToken;
  /** Text this token adds to the output (held back while it may start a stop string). */
  text: string;
}

/** The end of a generation. */
export interface HeadDoneEvent {
  kind: "done";
  requestId: string;
  /** The model the request was admitted on (see HeadTokenEvent.model). */
  model: ServedModel;
  index: number;
  /** Last visible text (a flushed partial character or held-back text). */
  text: string;
  finishReason: "stop" | "length" | "stop_sequence" | "cancelled";
  /** Prompt tokens taken from a prefix cache instead of run. */
  cachedTokens: number;
  /** The chain that served the last token (differs from the first after a recovery). */
  chain?: ServedStage[];
  promptTokens: number;
  completionTokens: number;
  timeToFirstTokenMs: number;
  decodeTokensPerSecond: number;
  recoveries: number;
}

/** What a generation streams. */
export type HeadEvent = HeadTokenEvent | HeadDoneEvent;

/** Runs the requests this agent heads. */
export class HeadService {
  /** What this head has routed to each replica (shared by its requests). */
  readonly ledger = new ReplicaLedger();
  /** Which replica each recent prompt prefix went to (cache-aware routing). */
  readonly prefixRoutes = new PrefixRoutes();

  constructor(
    private readonly s: AgentState,
    private readonly loop: PlacementLoop,
    private readonly peers: Peers,
    private readonly metrics: AgentMetrics,
  ) {}

  /** Aborted when gossip declares `nodeId` dead or gone (Peers.lostSignal). */
  lostSignal(nodeId: string): AbortSignal {
    return this.peers.lostSignal(nodeId);
  }

  /** A link to a stage named by a chain: this agent's own in-process, others over RPC. */
  linkTo(hop: ChainHop, member?: Member): StageLink {
    const s = this.s;
    if (hop.nodeId === s.nodeId && s.stage) {
      return new LocalStageLink(hop.nodeId, s.stage, {
        version: hop.version,
        chosen: { from: hop.from, to: hop.to },
        current: () => s.stage,
        epoch: () => this.loop.epoch,
        linkTo: (next) => this.linkTo(next),
        chunkRows: s.config.prefillChunk,
      });
    }
    return new LazyRemoteLink(hop, async () => {
      const m = member ?? s.gossip.member(hop.nodeId);
      if (!m?.meta) {
        // A stage forwarding to a node its gossip has not met yet (a join the head saw first):
        // the head's view is ahead of this one, not the next stage broken. Blaming it would
        // exclude a healthy node for the rest of the request; read the chain again instead.
        throw new StaleEpochError(
          `${s.nodeId} does not know ${hop.nodeId} yet; re-read the placement`,
          s.nodeId,
        );
      }
      return {
        transport: await this.peers.transportTo(m),
        dataEndpoint: this.peers.forwardEndpoint(m),
        lost: this.peers.lostSignal(m.id),
        sender: s.nodeId,
      };
    });
  }

  /**
   * The chain provider of one request: announced ranges of live members, routed to the replica
   * with the most free capacity (sticky for the request; a replay may move it).
   */
  private chainProvider(model: ServedModel, promptTokens: readonly number[]): GossipChainProvider {
    const byId = new Map<string, Member>();
    const provider: GossipChainProvider = new GossipChainProvider({
      model: model.id.toString(),
      nLayers: model.nLayers,
      candidates: () => this.loop.stageCandidates(byId),
      epoch: () => this.loop.epoch,
      ledger: this.ledger,
      head: this.s.nodeId,
      // A request whose stages are gone (retired after the model was replaced or undeployed)
      // cannot be replayed: no agent will hold its model's layers again.
      gone: () => modelGone(model, this.s.model),
      // Where this agent's stages keep a prefix cache, the cluster's are taken to as well (one
      // setting per cluster, as the k8s ConfigMap has it): a chat's next turn goes back to the
      // replica whose caches hold its history.
      prefix: this.s.config.prefixCache > 0
        ? { routes: this.prefixRoutes, ids: promptTokens }
        : undefined,
      link: (c) => {
        if (c.id === c.replica && c.from === 0) {
          this.metrics.onRoute(c.id);
          if (provider.prefixTokens > 0) this.metrics.onPrefixRoute(c.id);
        }
        return this.linkTo(
          { nodeId: c.id, from: c.from, to: c.to, version: c.version },
          byId.get(c.id),
        );
      },
    });
    return provider;
  }

  /** Generate for `p` as the head; events end with one "done" (or the stream throws). */
  async *generate(p: HeadParams, signal: AbortSignal): AsyncIterable<HeadEvent> {
    const s = this.s;
    const model = s.model;
    if (!model) {
      if (s.undeployed) {
        // Started with a model that was undeployed since: the cluster may serve one again.
        throw new RpcFailure(
          "unavailable",
          `model ${s.undeployed.name} was undeployed (llmctl models undeploy) and no model is ` +
            `served now; deploy one with \`llmctl models deploy <file.gguf>\``,
        );
      }
      const elsewhere = servingElsewhere(s.gossip.members(), s.nodeId);
      if (elsewhere) throw new RpcFailure("unavailable", elsewhere);
      throw new RpcFailure(
        "failed_precondition",
        "this agent serves no model (start it with --model)",
      );
    }
    if (p.model && !model.id.matches(p.model)) {
      throw new RpcFailure(
        "not_found",
        // The name GET /v1/models lists, so HTTP clients can use what the error suggests.
        `model ${p.model} is not served here (this cluster serves ${model.id.name})`,
      );
    }
    if (p.messages?.length && p.prompt) {
      throw new RpcFailure("invalid_argument", "send either a prompt or chat messages, not both");
    }
    if ((p.tools?.length || p.assistantPrefix) && !p.messages?.length) {
      throw new RpcFailure("invalid_argument", "tools need chat messages, not a prompt");
    }
    if (p.chatTemplateKwargs && !p.messages?.length) {
      throw new RpcFailure("invalid_argument", "chat template variables need chat messages");
    }
    if (this.loop.error) throw new RpcFailure("unavailable", `no placement: ${this.loop.error}`);
    if (s.draining) {
      throw shuttingDown(s.nodeId);
    }
    if (p.stop && p.stop.length > MAX_STOP_STRINGS) {
      throw new RpcFailure(
        "invalid_argument",
        `at most ${MAX_STOP_STRINGS} stop strings (got ${p.stop.length})`,
      );
    }
    if (p.stop?.some((x) => x.length > MAX_STOP_CHARS)) {
      throw new RpcFailure(
        "invalid_argument",
        `stop strings are at most ${MAX_STOP_CHARS} characters`,
      );
    }
    // The id comes back in every streamed message and sits in the head's tables: a 1 MB id made
    // a 50-token answer 51 MB.
    if (p.requestId && p.requestId.length > MAX_REQUEST_ID_CHARS) {
      throw new RpcFailure(
        "invalid_argument",
        `request_id is ${p.requestId.length} characters; at most ${MAX_REQUEST_ID_CHARS}`,
      );
    }
    const requestId = p.requestId || crypto.randomUUID();
    if (s.requests.has(requestId)) {
      throw new RpcFailure("already_exists", `request ${requestId} is already running`);
    }
    const maxContext = Math.min(s.config.contextSize, model.contextLength);
    // Tokenizing takes the event loop (~10 s for the 4 MiB a request body may hold, every other
    // stream and gossip stalled): a text longer than the context's tokens could ever cover is
    // refused before it is tokenized.
    const fits = (text: string) => {
      const bytes = utf8Length(text);
      // The bound is at least 4 bytes a token: a text within it needs no pass over the vocabulary.
      if (bytes <= maxContext * 4) return;
      const longest = longestPieceBytes(model.tokenizer);
      if (bytes > maxContext * longest) {
        throw new PromptTooLongError(Math.ceil(bytes / longest), maxContext, bytes);
      }
    };
    // Checked here, where the vocabulary is known, so the error names the field; a stage
    // further down refuses it too, but its answer reaches an HTTP client without the field.
    const vocab = model.tokenizer.vocabSize;
    const pastVocab = Object.keys(p.sampling.logitBias ?? {}).find((id) => Number(id) >= vocab);
    if (pastVocab !== undefined) {
      throw new InvalidParamError(
        "logit_bias",
        `logit_bias names token ${pastVocab}; the vocabulary has ${vocab} tokens`,
      );
    }
    let promptTokens: number[];
    /** Where a JSON constraint starts (jsonAfterReasoning): after a think block, or at once. */
    let reasoning: "open" | "start" | undefined;
    let reasoningOpen = false;
    if (p.promptTokens?.length) {
      const n = model.tokenizer.vocabSize;
      const bad = p.promptTokens.find((t) => !Number.isInteger(t) || t < 0 || t >= n);
      if (bad !== undefined) {
        throw new InvalidParamError(
          "prompt",
          `token id ${bad} is not in the vocabulary (0..${n - 1})`,
        );
      }
      promptTokens = [...p.promptTokens];
    } else if (p.messages?.length) {
      const chat = model.chat.render(p.messages, { tools: p.tools, kwargs: p.chatTemplateKwargs });
      const text = chat.text + (p.assistantPrefix ?? "");
      fits(text);
      promptTokens = model.tokenizer.encode(text, chat);
      reasoningOpen = model.chat.thinking && promptOpensReasoning(text);
      p.onRendered?.({ reasoningOpen });
      // A block the prompt closed (enable_thinking false) is this turn's: none may follow.
      if (
        p.jsonAfterReasoning && model.chat.thinking && !promptClosesReasoning(text) &&
        rendersThinkTags(model.tokenizer)
      ) {
        reasoning = reasoningOpen ? "open" : "start";
      }
    } else {
      fits(p.prompt ?? "");
      promptTokens = model.tokenizer.encode(p.prompt ?? "", { addBos: model.tokenizer.addBos });
    }
    if (promptTokens.length === 0) throw new RpcFailure("invalid_argument", "the prompt is empty");
    if (promptTokens.length >= maxContext) {
      throw new PromptTooLongError(promptTokens.length, maxContext);
    }
    const abort = new AbortController();
    const onAbort = () => abort.abort(signal.reason);
    signal.addEventListener("abort", onAbort);
    // A client gone before this point sent its abort event already.
    if (signal.aborted) onAbort();
    // The id is taken while the request waits in line, so a second request under it is refused
    // and Cancel reaches it there too.
    s.requests.set(requestId, abort);
    let release: () => void;
    try {
      // Wait for a generation slot (admission control); a full queue fails at once.
      release = await s.admission.acquire(abort.signal, p.onAccepted);
      if (s.draining) {
        // Shutdown began while it waited: it would only lengthen the drain and be cut off.
        release();
        throw shuttingDown(s.nodeId);
      }
      if (this.loop.error) {
        // The placement was lost while it waited: answered as a request arriving now is. Each
        // queued request waited 10 s for a plan in turn, a slot's worth at a time (the 256th of a
        // full queue some 20 minutes), while /health already said no placement.
        release();
        throw new RpcFailure("unavailable", `no placement: ${this.loop.error}`);
      }
    } catch (e) {
      signal.removeEventListener("abort", onAbort);
      s.requests.delete(requestId);
      if (e === SHUTDOWN) {
        throw shuttingDown(s.nodeId);
      }
      throw e;
    }
    s.counters.activeRequests++;
    const startedAt = performance.now();
    const tracker = new RequestTracker(s.events, {
      requestId,
      headNodeId: s.nodeId,
      model: model.id.toString(),
    });
    tracker.started(this.loop.plan?.stages.map((st) => st.nodeId));
    const queue: HeadEvent[] = [];
    let wake: (() => void) | undefined;
    const push = (e: HeadEvent) => {
      queue.push(e);
      wake?.();
    };
    // Markers the API reads (tool calls, think tags) come out as text even where the vocabulary
    // holds them as control tokens, which decoding drops.
    const markers = [
      ...(p.tools?.length ? toolMarkers(model.chat.toolFormat) : []),
      ...(p.messages?.length && model.chat.thinking ? [THINK_OPEN, THINK_CLOSE] : []),
    ];
    const decoder = markers.length
      ? markerDecoder(model.tokenizer, markers)
      : model.tokenizer.createDecoder();
    // Holds back text that may become a stop string, so clients never see part of one.
    // A token is let through once its text is, and not at all when a stop string cuts it.
    const stops = new StopGate<{ token: SampledToken; index: number }>(p.stop ?? []);
    let stoppedBySequence = false;
    const provider = this.chainProvider(model, promptTokens);
    const head = new Head(provider, {
      nodeId: s.nodeId,
      recoveryTimeoutMs: recoveryTimeoutMs(this.loop.plan?.stages.map((st) => st.bytes) ?? []),
      log: (m, fields) => {
        s.counters.recoveries++;
        tracker.recovering(m);
        s.log("warn", m, fields);
      },
      onResumed: (r) => {
        this.metrics.onResumed({ waitMs: r.waitedMs, replayMs: r.replayMs });
        s.log("info", "request resumed after a stage failure", {
          request: r.requestId,
          chain: r.chain,
          waited_ms: r.waitedMs,
          replayed_tokens: r.replayedTokens,
          replay_ms: r.replayMs,
        });
      },
      // A dead stage should leave every agent's plan now, not when its probe turn comes.
      onStageFailure: (id) => {
        if (id !== s.nodeId) s.gossip.probeNow(id);
      },
    });
    const maxTokens = p.maxTokens ?? 0;
    const running = head.generate({
      requestId,
      promptTokens,
      maxTokens: maxTokens > 0 ? maxTokens : maxContext,
      // KV caches only as long as this request can grow (cheaper to allocate under load).
      maxContext: maxTokens > 0
        ? Math.min(maxContext, promptTokens.length + maxTokens)
        : maxContext,
      signal: abort.signal,
      isEog: (id) => model.tokenizer.isEog(id),
      sampling: p.jsonSchema
        ? {
          ...p.sampling,
          json: {
            ...jsonConstraintFor(model.tokenizer, p.jsonSchema, promptTokens.length),
            ...(reasoning ? { reasoning } : {}),
          },
        }
        : p.sampling,
      onToken: (token, index) => {
        s.counters.tokensGeneratedTotal++;
        this.metrics.onToken(provider.replica);
        tracker.token();
        const { out, stopped } = stops.push(
          { token, index },
          model.tokenizer.isEog(token.id) ? "" : decoder.push(token.id),
        );
        if (stopped) stoppedBySequence = true;
        for (const { item, text } of out) {
          push({ kind: "token", requestId, model, index: item.index, token: item.token, text });
        }
        return !stopped;
      },
    });
    let done = false;
    let failure: unknown;
    running.then((result) => {
      if (result.finishReason === "cancelled" && abort.signal.reason === SHUTDOWN) {
        failure = new RpcFailure(
          "unavailable",
          `${s.nodeId} shut down after ${result.tokens.length} tokens of this ` +
            `generation (its --shutdown-grace ran out); the output is incomplete`,
        );
        tracker.finished(RequestPhase.FAILED, undefined, (failure as Error).message);
        return;
      }
      let tail = "";
      if (!stoppedBySequence) {
        const last = stops.finish(decoder.flush());
        stoppedBySequence = last.stopped;
        for (const { item, text } of last.out) {
          push({ kind: "token", requestId, model, index: item.index, token: item.token, text });
        }
        tail = last.tail;
      }
      const finishReason = stoppedBySequence
        ? "stop_sequence"
        : result.finishReason === "cancelled"
        ? "cancelled"
        : result.finishReason === "stop"
        ? "stop"
        : "length";
      const n = result.tokens.length;
      const tps = n > 1 ? (n - 1) / (result.decodeMs / 1000) : 0;
      push({
        kind: "done",
        requestId,
        model,
        index: n,
        text: tail,
        finishReason,
        chain: result.chains.at(-1),
        promptTokens: promptTokens.length,
        cachedTokens: result.cachedTokens,
        completionTokens: n,
        timeToFirstTokenMs: result.timeToFirstTokenMs,
        decodeTokensPerSecond: tps,
        recoveries: result.failures.length,
      });
      tracker.finished(
        finishReason === "cancelled" ? RequestPhase.CANCELLED : RequestPhase.COMPLETED,
        tps,
      );
    }, (e) => {
      failure = e;
      tracker.finished(RequestPhase.FAILED, undefined, (e as Error).message ?? String(e));
    }).finally(() => {
      done = true;
      wake?.();
    });
    try {
      for (;;) {
        while (queue.length) yield queue.shift()!;
        if (failure) throw failure;
        if (done) break;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    } finally {
      provider.release();
      abort.abort();
      signal.removeEventListener("abort", onAbort);
      s.requests.delete(requestId);
      s.counters.activeRequests--;
      release();
      this.metrics.onRequest((performance.now() - startedAt) / 1000);
      tracker.finished(RequestPhase.CANCELLED, undefined, "the client went away");
    }
  }

  /** Cancel a request this agent heads; false when none runs under that id. */
  cancel(requestId: string): boolean {
    const c = this.s.requests.get(requestId);
    c?.abort(new RpcFailure("canceled", `request ${requestId} was cancelled`));
    return c !== undefined;
  }
}

/**
 * How long a head waits for the layers of a dead stage to be served again before it fails the
 * request: 30 s (gossip declaring the death, re-planning, replaying), plus the time a
 * replacement needs to fetch and load the largest stage at a conservative 20 MB/s. A fixed 30 s
 * covered toy models only: a standby fetching and loading one ~1.8 GB stage of an 8B model
 * needs longer than that on a busy 2-core machine (issue 17).
 */
export function recoveryTimeoutMs(stageBytes: readonly number[]): number {
  const largest = stageBytes.reduce((m, b) => Math.max(m, b), 0);
  return 30_000 + Math.ceil(largest / 20e6) * 1000;
}

const thinkTagsRendered = new WeakMap<Tokenizer, boolean>();

/**
 * Whether the model's tokens for `<think>` and `</think>` come out as that text: the constraint
 * finds the block's end in the output's bytes (model/constrain/after_reasoning.ts), as the
 * reasoning splitter does in its text. A vocabulary that made them control tokens (they render
 * as nothing) would keep the constraint waiting for good; there it holds from the first token.
 */
function rendersThinkTags(tok: Tokenizer): boolean {
  let ok = thinkTagsRendered.get(tok);
  if (ok === undefined) {
    const same = (tag: string) =>
      tok.decode(tok.encode(tag, { addBos: false, addEos: false, parseSpecial: true })) === tag;
    ok = same(THINK_OPEN) && same(THINK_CLOSE);
    thinkTagsRendered.set(tok, ok);
  }
  return ok;
}
