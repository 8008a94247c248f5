/**
 * InferenceService at the RPC edge: Forward serves this agent's stage in a chain, Generate maps
 * a GenerateRequest to head parameters and the head's plain events to GenerateResponse
 * messages, Cancel stops a request this agent heads. The only place protobuf meets the head.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { Code, type ServiceImpl } from "@connectrpc/connect";
import {
  Dtype,
  FinishReason,
  type GenerateRequest,
  type GenerateResponse,
  GenerateResponseSchema,
  GenerateUsageSchema,
  InferenceService,
  PlacementSchema,
  StageAssignmentSchema,
  TokenLogprobSchema,
} from "../../proto/mod.ts";
import {
  type ForwardContext,
  forwardHandler,
  requestOfSession,
  samplingFromWire,
} from "../pipeline/mod.ts";
import { RpcFailure, toConnectError } from "../rpc/mod.ts";
import {
  CHAT_ROLES,
  type ChatMessage,
  checkTemplateKwargs,
  checkToolCallId,
  checkTools,
  MAX_TEMPLATE_KWARGS_CHARS,
  MAX_TOOL_CALLS,
  MAX_TOOLS_CHARS,
  parseToolArguments,
  TemplateKwargsError,
  ToolSpecError,
} from "../../model/chat/mod.ts";
import type { AgentMetrics } from "../telemetry/mod.ts";
import type { AgentState } from "./state.ts";
import type { HeadParams, HeadService } from "./head_service.ts";
import type { PlacementLoop } from "./placement_loop.ts";
import type { RequestForwarder } from "./forward_rpc.ts";

const FINISH: Record<string, FinishReason> = {
  stop: FinishReason.STOP,
  length: FinishReason.LENGTH,
  stop_sequence: FinishReason.STOP_SEQUENCE,
  cancelled: FinishReason.CANCELLED,
};

/** A Dtype as the .proto spells it (DTYPE_F16), or its number when it is none. */
function wireName(d: Dtype): string {
  return Dtype[d] === undefined ? String(d) : `DTYPE_${Dtype[d]}`;
}

/** Head parameters of a Generate request; throws INVALID_ARGUMENT for what the head cannot do. */
export function headParams(req: GenerateRequest): HeadParams {
  // The head's links send f32 between stages: an f16 asked for was silently run as f32.
  if (req.activationDtype !== Dtype.UNSPECIFIED && req.activationDtype !== Dtype.F32) {
    throw new RpcFailure(
      "invalid_argument",
      `activation_dtype ${wireName(req.activationDtype)} is not supported: ` +
        `activations travel between stages as f32 (send DTYPE_F32 or leave it unset)`,
    );
  }
  const w = req.sampler;
  // A 64-bit wire seed draws with its low 32 bits, as the sampler's RNG takes them.
  const seed = w?.seed === undefined ? undefined : Number(w.seed & 0xffffffffn);
  return {
    model: req.model,
    prompt: req.prompt,
    ...chatOf(req),
    ...templateKwargsOf(req),
    maxTokens: req.maxTokens,
    sampling: w ? { ...samplingFromWire({ ...w, seed: undefined }), seed } : {},
    stop: req.stop,
    requestId: req.requestId,
  };
}

/**
 * The chat turns and tools of a Generate request, checked as the HTTP API checks them (the same
 * bounds; INVALID_ARGUMENT naming the field otherwise).
 */
function chatOf(req: GenerateRequest): Pick<HeadParams, "messages" | "tools"> {
  if (req.messages.length === 0 && req.toolsJson) {
    throw new RpcFailure("invalid_argument", "tools_json needs messages, not a prompt");
  }
  const messages = req.messages.map((m, i): ChatMessage => {
    const at = `messages[${i}]`;
    // As the HTTP API checks them: another string went into the template as a speaker.
    if (!CHAT_ROLES.includes(m.role)) {
      throw new RpcFailure(
        "invalid_argument",
        `${at}.role ${JSON.stringify(m.role.slice(0, 64))} is not one of ${CHAT_ROLES.join(", ")}`,
      );
    }
    const turn: ChatMessage = { role: m.role, content: m.content };
    if (m.toolCalls.length > MAX_TOOL_CALLS) {
      throw new ToolSpecError(
        `${at}.tool_calls`,
        `${at}.tool_calls holds at most ${MAX_TOOL_CALLS}`,
      );
    }
    if (m.toolCalls.length) {
      turn.toolCalls = m.toolCalls.map((c, j) => {
        const path = `${at}.tool_calls[${j}]`;
        if (!c.name || c.name.length > 64) {
          throw new ToolSpecError(`${path}.name`, `${path}.name must be 1 to 64 characters`);
        }
        return {
          id: checkToolCallId(c.id, `${path}.id`),
          name: c.name,
          arguments: parseToolArguments(c.arguments, `${path}.arguments`),
        };
      });
    }
    if (m.role === "tool") turn.toolCallId = checkToolCallId(m.toolCallId, `${at}.tool_call_id`);
    if (m.name) {
      if (m.name.length > 64) throw new ToolSpecError(`${at}.name`, `${at}.name is over 64`);
      turn.name = m.name;
    }
    return turn;
  });
  if (!req.toolsJson) return { messages };
  if (req.toolsJson.length > MAX_TOOLS_CHARS) {
    throw new ToolSpecError(
      "tools_json",
      `tools_json is longer than ${MAX_TOOLS_CHARS} characters`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(req.toolsJson);
  } catch (e) {
    throw new ToolSpecError("tools_json", `tools_json is not JSON: ${(e as Error).message}`);
  }
  return { messages, tools: checkTools(raw) };
}

/** The chat template variables of a Generate request (chat_template_kwargs_json), checked. */
function templateKwargsOf(req: GenerateRequest): Pick<HeadParams, "chatTemplateKwargs"> {
  const json = req.chatTemplateKwargsJson;
  if (!json) return {};
  const path = "chat_template_kwargs_json";
  if (req.messages.length === 0) {
    throw new TemplateKwargsError(path, `${path} needs messages, not a prompt`);
  }
  // Bounded before it is parsed (checkTemplateKwargs bounds the parsed value the same way).
  if (json.length > MAX_TEMPLATE_KWARGS_CHARS) {
    throw new TemplateKwargsError(path, `${path} is longer than ${MAX_TEMPLATE_KWARGS_CHARS}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (e) {
    throw new TemplateKwargsError(path, `${path} is not JSON: ${(e as Error).message}`);
  }
  return { chatTemplateKwargs: checkTemplateKwargs(raw, path) };
}

/** What this agent's stage serves Forward with (over gRPC and over the TCP data plane). */
export function forwardContext(
  s: AgentState,
  head: HeadService,
  loop: PlacementLoop,
  metrics: AgentMetrics,
): ForwardContext {
  return {
    nodeId: s.nodeId,
    host: () => s.stage,
    epoch: () => loop.epoch,
    linkTo: (hop) => head.linkTo(hop),
    chunkRows: s.config.prefillChunk,
    replies: s.replies,
    // Only members are watched: a signal per sender named by anyone reaching Forward would grow
    // the peers' table without bound.
    lost: (nodeId) => s.gossip.member(nodeId) ? head.lostSignal(nodeId) : undefined,
    // Its own requests' sessions are let in while it drains: the drain waits for those
    // requests, and refused, one whose chain comes back here through another agent's stage (a
    // retry, a replay) would exclude this agent's layers and wait for another host of them.
    draining: (sessionId) => {
      if (!s.draining) return false;
      const request = requestOfSession(sessionId);
      return request === undefined || !s.requests.has(request);
    },
    onFrame: (frame) => {
      s.counters.framesProcessedTotal++;
      metrics.onFrame(frame);
    },
  };
}

/**
 * The InferenceService handlers of an agent; while it serves no model (--no-model), `forward`
 * passes Generate and Cancel on to an agent that serves one.
 */
export function inferenceService(
  s: AgentState,
  head: HeadService,
  loop: PlacementLoop,
  metrics: AgentMetrics,
  forward?: RequestForwarder,
): ServiceImpl<typeof InferenceService> {
  return {
    forward: forwardHandler(forwardContext(s, head, loop, metrics)),
    generate: (req, ctx) =>
      forward?.forwards(ctx.requestHeader)
        ? forward.generate(req, ctx)
        : generateResponses(head, loop, req, ctx.signal),
    cancel: async (req) =>
      (await forward?.cancel(req)) ?? { cancelled: head.cancel(req.requestId) },
  };
}

async function* generateResponses(
  head: HeadService,
  loop: PlacementLoop,
  req: GenerateRequest,
  signal: AbortSignal,
): AsyncIterable<GenerateResponse> {
  for await (const e of head.generate(headParams(req), signal)) {
    // The model the request was admitted on: a deploy may have replaced the one served now.
    const model = () => e.model;
    if (e.kind === "token") {
      yield create(GenerateResponseSchema, {
        requestId: e.requestId,
        index: e.index,
        tokenId: e.token.id,
        text: e.text,
        logprob: e.token.logprob,
        topLogprobs: e.token.top.map((t) =>
          create(TokenLogprobSchema, {
            tokenId: t.id,
            logprob: t.logprob,
            text: model().tokenizer.decode([t.id]),
          })
        ),
        placement: e.index === 0 ? loop.message() : undefined,
      });
      continue;
    }
    // The head stops a request whose deadline passed as it stops a cancelled one, but gRPC and
    // Connect end such a call with DEADLINE_EXCEEDED, not with an answer.
    if (
      e.finishReason === "cancelled" && signal.aborted &&
      toConnectError(signal.reason).code === Code.DeadlineExceeded
    ) {
      throw new RpcFailure(
        "deadline_exceeded",
        `the deadline passed after ${e.completionTokens} tokens of request ${e.requestId}`,
      );
    }
    yield create(GenerateResponseSchema, {
      requestId: e.requestId,
      index: e.index,
      text: e.text,
      finishReason: FINISH[e.finishReason],
      // The chain that served the last token: after a recovery it differs from the first.
      placement: e.chain
        ? create(PlacementSchema, {
          model: model().id.toString(),
          totalLayers: model().nLayers,
          epoch: loop.epoch,
          stages: e.chain.map((st) =>
            create(StageAssignmentSchema, { nodeId: st.nodeId, fromLayer: st.from, toLayer: st.to })
          ),
        })
        : undefined,
      usage: create(GenerateUsageSchema, {
        promptTokens: e.promptTokens,
        completionTokens: e.completionTokens,
        timeToFirstTokenMs: e.timeToFirstTokenMs,
        decodeTokensPerSecond: e.decodeTokensPerSecond,
        recoveries: e.recoveries,
      }),
    });
  }
}
