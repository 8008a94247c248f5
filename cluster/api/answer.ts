/**
 * Answering a validated request: run its generation (or one per prompt of a batch) on the
 * TextGenerator and send the result as one JSON response or as an SSE stream, cancelling the
 * generation when the client goes away.
 *
 * @module
 */
import type * as http from "node:http";
import { ApiError, toApiError } from "./errors.ts";
import {
  type DoneEvent,
  findModel,
  type GenerationEvent,
  type GenerationParams,
  type TextGenerator,
} from "./generator.ts";
import type { ParsedRequest } from "./request.ts";
import { CompletionBuilder } from "./response.ts";
import { sendJson } from "./http_io.ts";

/** The served model's canonical id when the client used an alias (`stories260K` for the file). */
function canonicalModel(generator: TextGenerator, name: string): string {
  return findModel(generator, name)?.id ?? name;
}

/**
 * Abort `abort` when the client goes away before the answer is finished: the response closes, or
 * the connection does (a pipelined request's response, not yet attached to the socket, never
 * emits its own "close" under Deno's node:http, so its generation ran on to the end for a client
 * long gone). Returns the unsubscribe.
 */
function cancelWhenGone(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  abort: AbortController,
): () => void {
  const gone = () => {
    if (!res.writableFinished) abort.abort(new DOMException("the client went away", "AbortError"));
  };
  res.once("close", gone);
  const socket = req.socket;
  socket?.once("close", gone);
  return () => {
    res.off("close", gone);
    socket?.off("close", gone);
  };
}

/**
 * Wait until `res` takes more (its buffer drained below the high-water mark), for at most
 * `timeoutMs`: a client that stops reading is then cut off (the socket destroyed, which aborts
 * its generation through cancelWhenGone), rather than holding its connection, its buffered
 * answer and a place under the connection cap for as long as it stays connected.
 */
function drained(res: http.ServerResponse, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    const timer = setTimeout(() => {
      res.destroy();
      done();
    }, timeoutMs);
    res.once("drain", done);
    res.once("close", done);
  });
}

/**
 * Several prompts in one completions request: one generation each, run together (the stages
 * batch them), answered as one response with a choice per prompt in prompt order and the usage
 * summed. The first failure answers the whole request, as OpenAI does.
 */
export async function completeBatch(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  parsed: ParsedRequest,
  batch: GenerationParams[],
  generator: TextGenerator,
): Promise<void> {
  const abort = new AbortController();
  const unwatch = cancelWhenGone(req, res, abort);
  try {
    await answerBatch(res, parsed, batch, generator, abort);
  } finally {
    unwatch();
  }
}

async function answerBatch(
  res: http.ServerResponse,
  parsed: ParsedRequest,
  batch: GenerationParams[],
  generator: TextGenerator,
  abort: AbortController,
): Promise<void> {
  const model = canonicalModel(generator, parsed.params.model);
  const run = async (params: GenerationParams, index: number) => {
    const builder = new CompletionBuilder(parsed, model, index);
    let done: DoneEvent | undefined;
    try {
      for await (const ev of generator.generate(params, abort.signal)) {
        if (ev.kind === "token") builder.token(ev);
        else if (ev.kind === "prompt") builder.prompt(ev);
        else done = ev;
      }
    } catch (e) {
      if (abort.signal.aborted) throw e;
      // Which prompt of the batch failed (a 413 said only "the prompt is too long"); the
      // agent's own failures keep their stack for the log.
      const err = toApiError(e);
      if (err.status >= 500) throw e;
      throw new ApiError(
        err.status,
        `prompt ${index} of ${batch.length}: ${err.message}`,
        err.type,
        err.code,
        err.param ?? "prompt",
      );
    }
    if (!done) throw new DOMException("the generation ended without an answer", "AbortError");
    return { builder, done };
  };
  let answers;
  try {
    answers = await Promise.all(batch.map(run));
  } catch (e) {
    // A client gone while its prompts waited or ran is no failure of the agent (single requests
    // return quietly too); the abort stops the batch's other generations either way.
    const gone = abort.signal.aborted;
    abort.abort();
    if (gone) return;
    throw e;
  }
  if (abort.signal.aborted) return;
  const responses = answers.map(({ builder, done }) => builder.response(done));
  const usage = {
    prompt_tokens: 0,
    completion_tokens: 0,
    total_tokens: 0,
    prompt_tokens_details: { cached_tokens: 0 },
  };
  for (const { done } of answers) {
    usage.prompt_tokens += done.promptTokens;
    usage.completion_tokens += done.completionTokens;
    usage.prompt_tokens_details.cached_tokens += done.cachedTokens ?? 0;
  }
  usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
  return sendJson(res, 200, {
    ...responses[0],
    choices: responses.flatMap((r) => r.choices as unknown[]),
    usage,
  });
}

/** How an answer is sent: SSE keep-alive comments, and how long a client may stop reading. */
export interface AnswerTiming {
  /** Quiet time after which a stream sends a keep-alive comment. */
  keepAliveMs: number;
  /** Longest wait for a client to take more of a stream before it is cut off. */
  writeTimeoutMs: number;
}

/** Run one generation and answer it as JSON or as an SSE stream. */
export async function complete(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  parsed: ParsedRequest,
  generator: TextGenerator,
  timing: AnswerTiming,
  /** Logs a failure once the stream has begun (its status is sent in band) and shapes it. */
  reportStreamError: (e: unknown) => ApiError,
): Promise<void> {
  const abort = new AbortController();
  // The client went away (closed the socket) before we finished: cancel the generation.
  const unwatch = cancelWhenGone(req, res, abort);
  try {
    await answer(res, parsed, generator, timing, reportStreamError, abort);
  } finally {
    unwatch();
  }
}

async function answer(
  res: http.ServerResponse,
  parsed: ParsedRequest,
  generator: TextGenerator,
  { keepAliveMs, writeTimeoutMs }: AnswerTiming,
  reportStreamError: (e: unknown) => ApiError,
  abort: AbortController,
): Promise<void> {
  let onAccepted: (() => void) | undefined;
  const accepted = new Promise<void>((resolve) => (onAccepted = resolve));
  const it = generator.generate(parsed.params, abort.signal, parsed.stream ? onAccepted : undefined)
    [Symbol.asyncIterator]();
  // Answer with the served model's canonical id when the client used an alias.
  const model = canonicalModel(generator, parsed.params.model);
  const builder = new CompletionBuilder(parsed, model);
  let done: DoneEvent | undefined;
  let next: IteratorResult<GenerationEvent> | undefined;
  let keepAlive: ReturnType<typeof setTimeout> | undefined;
  try {
    let pending = it.next();
    if (!parsed.stream) {
      // The first event decides the status: errors before it (validation, 413, 429, 503) are
      // answered with their status code.
      for (next = await pending; !next.done; next = await it.next()) {
        const ev: GenerationEvent = next.value;
        if (ev.kind === "token") builder.token(ev);
        else if (ev.kind === "prompt") builder.prompt(ev);
        else done = ev;
      }
      if (!done || abort.signal.aborted) return;
      return sendJson(res, 200, builder.response(done));
    }
    // A stream's status is decided once the generator took the request (checked, a slot or a
    // place in line) or at its first event, whichever comes first: a queue or a long prompt
    // must not hold the status line back until proxies and clients with read timeouts give up.
    // After it, errors can only be reported in-band.
    await Promise.race([pending, accepted]);
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
    });
    // While nothing is sent (waiting in line, a long prompt), an SSE comment every
    // `keepAliveMs` keeps the connection alive; clients ignore comments. A token only notes when
    // it was sent: the one timer re-arms itself for what is left of the quiet time (re-arming it
    // at every token was a timer per token on the streaming path).
    let lastSent = performance.now();
    const ping = () => {
      const quietFor = performance.now() - lastSent;
      if (quietFor < keepAliveMs) {
        keepAlive = setTimeout(ping, keepAliveMs - quietFor);
        return;
      }
      res.write(": keep-alive\n\n");
      lastSent = performance.now();
      keepAlive = setTimeout(ping, keepAliveMs);
    };
    /** Whether the response takes more now (false: wait for drained before the next token). */
    const send = (obj: unknown): boolean => {
      lastSent = performance.now();
      return res.write(`data: ${JSON.stringify(obj)}\n\n`);
    };
    const role = builder.roleChunk();
    if (role) send(role);
    else res.flushHeaders();
    keepAlive = setTimeout(ping, keepAliveMs);
    try {
      for (next = await pending; !next.done; next = await pending) {
        if (abort.signal.aborted) break;
        const ev: GenerationEvent = next.value;
        let full = false;
        if (ev.kind === "token") { for (const c of builder.token(ev)) full = !send(c) || full; }
        else if (ev.kind === "prompt") builder.prompt(ev);
        else done = ev;
        // A client that does not read: its answer waits in our buffer, not in an unbounded one.
        if (full) await drained(res, writeTimeoutMs);
        pending = it.next();
      }
    } catch (e) {
      if (abort.signal.aborted) return;
      send(reportStreamError(e).body());
      res.end();
      return;
    }
    if (done && !abort.signal.aborted) {
      builder.finalChunks(done).forEach(send);
      if (parsed.includeUsage) send(builder.usageChunk(done));
      res.end("data: [DONE]\n\n");
    } else res.end();
  } catch (e) {
    if (abort.signal.aborted) return;
    throw e;
  } finally {
    clearTimeout(keepAlive);
    if (!next?.done) {
      // Left early (client gone, error): stop the generation and free its slot.
      abort.abort();
      await it.return?.();
    }
  }
}
