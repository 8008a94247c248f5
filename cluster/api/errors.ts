/**
 * Errors of the OpenAI-compatible API: each knows its HTTP status and its OpenAI error `type`
 * and `code`; errors from the rest of the agent are mapped through their `rpcCode` (the status
 * the RPC layer would send) so HTTP and RPC clients learn the same thing.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { boundMessage, rpcCodeName } from "../rpc/errors.ts";

/** The body OpenAI clients parse: `{"error": {message, type, param, code}}`. */
export interface OpenAIErrorBody {
  /** What went wrong; `param` names the offending field, `code` is machine-readable. */
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** An error with an HTTP status and the OpenAI error fields; the message says what to do. */
export class ApiError extends Error {
  /** Error name. */
  override name = "ApiError";
  /** Make an error answered with `status`. */
  constructor(
    readonly status: number,
    message: string,
    readonly type = typeForStatus(status),
    readonly code: string | null = null,
    readonly param: string | null = null,
  ) {
    super(message);
  }

  /** The JSON body clients see. */
  body(): OpenAIErrorBody {
    return {
      error: { message: this.message, type: this.type, param: this.param, code: this.code },
    };
  }
}

/** The prompt (after templating) does not fit the context: HTTP 413, RPC INVALID_ARGUMENT. */
export class PromptTooLongError extends Error {
  /** Error name. */
  override name = "PromptTooLongError";
  /** RPC status. */
  readonly rpcCode = "invalid_argument";
  /** HTTP status (413 Payload Too Large). */
  readonly httpStatus = 413;
  /**
   * Make the error for a prompt of `tokens` tokens against a context of `context`; with `bytes`,
   * a prompt refused by its size before it was tokenized, of at least `tokens` tokens.
   */
  constructor(readonly tokens: number, readonly context: number, bytes?: number) {
    const size = bytes === undefined ? `${tokens}` : `${bytes} bytes, at least ${tokens}`;
    super(
      `the prompt has ${size} tokens; the context holds ${context} (shorten the prompt, or ` +
        `start the agents with a larger --context-size)`,
    );
  }
}

/**
 * A request field that only the model can check (a token id past its vocabulary): HTTP 400 naming
 * the field (OpenAI's `param`, code `invalid_value`), RPC INVALID_ARGUMENT.
 */
export class InvalidParamError extends Error {
  /** Error name. */
  override name = "InvalidParamError";
  /** RPC status. */
  readonly rpcCode = "invalid_argument";
  /** HTTP status. */
  readonly httpStatus = 400;
  /** Make the error for request field `param`, with a `message` saying what is wrong. */
  constructor(readonly param: string, message: string) {
    super(message);
  }
}

/** Every generation slot is busy and the queue is full: HTTP 429, RPC RESOURCE_EXHAUSTED. */
export class QueueFullError extends Error {
  /** Error name. */
  override name = "QueueFullError";
  /** RPC status. */
  readonly rpcCode = "resource_exhausted";
  /** HTTP status (429 Too Many Requests). */
  readonly httpStatus = 429;
}

const STATUS_BY_RPC: Record<string, number> = {
  invalid_argument: 400,
  failed_precondition: 400,
  out_of_range: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  already_exists: 409,
  resource_exhausted: 429,
  canceled: 499,
  unimplemented: 501,
  unavailable: 503,
  deadline_exceeded: 504,
  // The model's own output is broken (NaN logits): the server's failure, but not a bug.
  data_loss: 500,
};

const CODE_BY_STATUS: Record<number, string> = {
  401: "invalid_api_key",
  404: "model_not_found",
  413: "context_length_exceeded",
  429: "queue_full",
  503: "no_placement",
};

/** OpenAI's error `type` for a status. */
function typeForStatus(status: number): string {
  if (status === 401) return "authentication_error";
  if (status === 429) return "rate_limit_error";
  if (status === 503) return "service_unavailable";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

/**
 * Map anything thrown to an ApiError: an ApiError stays; an `httpStatus` property wins; then the
 * `rpcCode` property (RpcFailure, StageSessionError, NoPlacementError…); else 500, worded as a bug.
 */
export function toApiError(e: unknown): ApiError {
  const a = mapToApiError(e);
  // Messages quote request and file contents: never answer with megabytes of them.
  const bounded = boundMessage(a.message);
  return bounded === a.message ? a : new ApiError(a.status, bounded, a.type, a.code, a.param);
}

/**
 * Codes of another agent's answer that keep their meaning for the API's client: its request was
 * refused, or the cluster is busy or reorganising. Others (an agent's 401 from a proxy between
 * agents, not found, internal) say nothing about the client's key or model and stay 500s.
 */
const REMOTE_CODES = new Set([
  Code.InvalidArgument,
  Code.OutOfRange,
  Code.FailedPrecondition,
  Code.ResourceExhausted,
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.DataLoss,
]);

function mapToApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof ConnectError && REMOTE_CODES.has(e.code)) {
    // An error another agent answered (a remote tail refusing sampling settings): its status
    // code says whose fault it is, as a local error's rpcCode does.
    const status = STATUS_BY_RPC[rpcCodeName(e.code)!];
    return new ApiError(status, e.rawMessage, undefined, CODE_BY_STATUS[status] ?? null);
  }
  const err = e instanceof Error ? e : new Error(String(e));
  const http = (err as { httpStatus?: unknown }).httpStatus;
  const rpc = (err as { rpcCode?: unknown }).rpcCode;
  const status = typeof http === "number"
    ? http
    : typeof rpc === "string" && rpc in STATUS_BY_RPC
    ? STATUS_BY_RPC[rpc]
    : err.name === "SamplerParamError" || err.name === "ChatTemplateError"
    ? 400
    : undefined;
  if (err instanceof InvalidParamError) {
    return new ApiError(400, err.message, undefined, "invalid_value", err.param);
  }
  if (status !== undefined) {
    return new ApiError(status, err.message, undefined, CODE_BY_STATUS[status] ?? null);
  }
  return new ApiError(
    500,
    `internal error: ${err.message} (a bug in the agent; rerun it with DLLM_DEBUG=1 for the ` +
      `stack and report it)`,
  );
}
