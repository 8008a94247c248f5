/**
 * The head of a request: opens a session on the first stage of a chain (layers 0..n), which
 * opens the next stage's session itself, and so on: frames travel stage to stage, the tail
 * samples, and the token comes back along the chain. The head keeps admission, replay and
 * failure attribution: when a stage dies, the error that comes back names it, the head
 * re-places and replays prompt + tokens so far — the client sees a delay, and greedy or seeded
 * output stays identical.
 *
 * Transport-free: stages are reached through `StageLink`s, which are RPC streams between agents
 * and direct calls for a stage in the same process.
 */
import type { SampledToken, TailSampling } from "./stage_frame.ts";
import { type ChainProvider, headSessionId, type SessionLink, type StageLink } from "./links.ts";
import {
  goneOpener,
  guard,
  isStageBusy,
  NoPlacementError,
  ReplyStreamError,
  stageKey,
  StageLinkError,
  StaleEpochError,
} from "./stage_errors.ts";
import { withReplies } from "./replies.ts";
import { type OpenSpan, openSpan, withSpan } from "../telemetry/tracing.ts";
import { untilAborted } from "../deadline.ts";

/**
 * Longest pause between tries of a request every replica refused as full (ms): a freed slot
 * waits at most this long for the next request, and 64 waiting requests try 256 times a second.
 */
const BUSY_POLL_MAX_MS = 250;

/** A generation request as the head runs it. */
export interface HeadRequest {
  requestId: string;
  promptTokens: number[];
  maxTokens: number;
  /** Tail sampling; the head fixes a seed when none is given so replays draw the same. */
  sampling: TailSampling;
  /** True for end-of-generation tokens; generation stops after one unless ignoreEog. */
  isEog: (id: number) => boolean;
  ignoreEog?: boolean;
  maxContext: number;
  /** Called for each token as it is sampled; return false to stop (stop string, cancel). */
  onToken?: (token: SampledToken, index: number) => boolean | void;
  /** Called once the request is checked (its prompt fits the context), before any pass. */
  onStart?: () => void;
  /** Aborts the generation between steps. */
  signal?: AbortSignal;
}

/** What a generation produced, with the events that shaped it. */
export interface HeadResult {
  tokens: SampledToken[];
  finishReason: "stop" | "length" | "cancelled" | "stopped";
  /** Chains used, in order (more than one when a stage failed). */
  chains: { nodeId: string; from: number; to: number }[][];
  /** Stages that failed during the request. */
  failures: { nodeId: string; message: string }[];
  timeToFirstTokenMs: number;
  decodeMs: number;
  /** Prompt tokens the (last) chain took from a prefix cache instead of running them. */
  cachedTokens: number;
}

/** Head settings. */
export interface HeadOptions {
  /** How long to wait for a chain after a failure before giving up. Default 30 s. */
  recoveryTimeoutMs?: number;
  /**
   * How long a request waits for a complete chain at its start (stages still loading or
   * announcements still gossiping). Default 10 s.
   */
  initialWaitMs?: number;
  /** Most re-plans per request. Default 8. */
  maxRecoveries?: number;
  /**
   * On a chain of several stages, ask the tail for a reply stream (StageLink.openReplies) so
   * tokens come straight back instead of along the chain. Default true.
   */
  directReplies?: boolean;
  /**
   * Log hook for recoveries; `fields` name the failed stage's announcement and what the request
   * now excludes (which announcement a replay avoided is what tells a re-placement apart from a
   * dead stage seen again).
   */
  log?: (msg: string, fields?: Record<string, unknown>) => void;
  /**
   * A request resumed after a stage failure: the new chain, how long from the failure until the
   * replay began (the cluster re-placing the lost layers, the session opening) and how long the
   * replay's prefill took. Recovery time is these two, and an operator needs to know which.
   */
  onResumed?: (r: {
    requestId: string;
    chain: string;
    waitedMs: number;
    replayedTokens: number;
    replayMs: number;
  }) => void;
  /**
   * A stage failed under a request (its link broke or it answered an error): the agent asks
   * gossip to probe that node now, so a dead one leaves everyone's plans within one probe
   * interval instead of waiting for its turn.
   */
  onStageFailure?: (nodeId: string) => void;
  /**
   * Greedy tokens a tail may decode ahead per decode frame (StageFrame.lookahead; not after the
   * prompt, which would delay the first token): a whole-model GPU stage then reads back once per
   * run instead of once per token. Tokens still reach onToken one by one, and stops (end of
   * generation, stop strings, max tokens) are exact: tokens decoded past a stop are dropped with
   * the session. Default 16; 0: off.
   */
  lookahead?: number;
  /**
   * This head's node id: a stage that closed a session because gossip declared this head gone
   * (frozen, partitioned) did not fail, and is not blamed for it (see goneOpener) for
   * `takeBackMs`.
   */
  nodeId?: string;
  /**
   * How long stages may keep closing this head's sessions as those of a gone opener before the
   * head blames them as failed (default 8 s, at most the recovery timeout): a head back from a
   * freeze is taken back within a gossip round or two; one a stage never hears again (a
   * one-sided network fault) must move its request elsewhere.
   */
  takeBackMs?: number;
}

/** Runs requests over chains from a ChainProvider. */
export class Head {
  constructor(private readonly provider: ChainProvider, private readonly opts: HeadOptions = {}) {}

  /** Generate tokens for `req`, recovering from stage failures (traced as `llm.request`). */
  generate(req: HeadRequest): Promise<HeadResult> {
    return withSpan("llm.request", {
      "llm.request_id": req.requestId,
      "llm.prompt_tokens": req.promptTokens.length,
    }, () => this.run(req));
  }

  private async run(req: HeadRequest): Promise<HeadResult> {
    const sampling: TailSampling = {
      ...req.sampling,
      seed: req.sampling.seed ?? Math.floor(Math.random() * 2 ** 32),
    };
    const result: HeadResult = {
      tokens: [],
      finishReason: "length",
      chains: [],
      failures: [],
      timeToFirstTokenMs: 0,
      decodeMs: 0,
      cachedTokens: 0,
    };
    const exclude = new Set<string>();
    const t0 = performance.now();
    let tFirst = 0;
    let attempt = 0;
    let stale = 0;
    /** Since when every replica has refused this request as full (0: none has), and the polls. */
    let busySince = 0;
    let busyPolls = 0;
    /** A reply stream from the tail failed under this request: tokens come along the chain. */
    let alongChain = false;
    // Request ids come from clients, who may retry with the same one while a stage still holds
    // the first try's session (freed only when its stream ends): a nonce keeps them apart.
    const run = crypto.randomUUID().slice(0, 8);
    const budget = Math.min(req.maxTokens, req.maxContext - req.promptTokens.length);
    if (budget <= 0) {
      throw new RangeError(
        `the prompt's ${req.promptTokens.length} tokens leave no room in a ${req.maxContext}-token context`,
      );
    }
    req.onStart?.();
    const recoveryMs = this.opts.recoveryTimeoutMs ?? 30_000;
    let failedAt = 0;
    /** Since when stages have been closing this head's sessions as its opener's (0: not). */
    let takenBackSince = 0;
    /** The request was cancelled before its end: what it has so far. */
    const cancelled = (): HeadResult => {
      result.finishReason = "cancelled";
      result.timeToFirstTokenMs = tFirst ? tFirst - t0 : 0;
      result.decodeMs = tFirst ? performance.now() - tFirst : 0;
      return result;
    };
    for (;;) {
      if (req.signal?.aborted) return cancelled();
      let chain: StageLink[];
      try {
        chain = await this.provider.chain({
          exclude,
          timeoutMs: attempt === 0 && stale === 0 ? this.opts.initialWaitMs ?? 10_000 : recoveryMs,
          signal: req.signal,
        });
      } catch (e) {
        // Cancelled while it waited for stages to be placed.
        if (req.signal?.aborted) return cancelled();
        // After a stage failed, its cause (refused certificate, reset stream) is what the user
        // can act on; "no live agent" alone would blame the cluster's size.
        const last = result.failures.at(-1);
        if (!(e instanceof NoPlacementError) || !last) throw e;
        throw new NoPlacementError(
          `${e.message}; the stage on ${last.nodeId} failed: ${last.message}`.slice(0, 1024),
        );
      }
      result.chains.push(chain.map(({ nodeId, from, to }) => ({ nodeId, from, to })));
      const sessionId = headSessionId(req.requestId, run, attempt, stale);
      let link: SessionLink | undefined;
      let decode: OpenSpan | undefined;
      const first = chain[0];
      const tail = chain[chain.length - 1];
      // Prefill: prompt plus whatever was generated before a failure (replay).
      let input = [...req.promptTokens, ...result.tokens.map((t) => t.id)];
      // Tokens straight from the tail where it offers a reply stream (else along the chain),
      // when that saves a crossing: the answer along the chain crosses every network hop back.
      const hopsBack = chain.length - (first.local ? 1 : 0);
      const replies = hopsBack >= 2 && this.opts.directReplies !== false && !alongChain
        ? await tail.openReplies?.(sessionId).catch(() => undefined)
        : undefined;
      try {
        link = await guard(first.nodeId, () =>
          first.openSession({
            sessionId,
            maxContext: req.maxContext,
            model: this.provider.model ?? "",
            epoch: this.provider.epoch?.() ?? 0n,
            sampling,
            downstream: chain.slice(1).map(({ nodeId, from, to, version }) => ({
              nodeId,
              from,
              to,
              version,
            })),
            prefixIds: Int32Array.from(input),
            ...(replies ? { replyDirect: true } : {}),
          }).catch((e) => {
            replies?.close();
            throw e;
          }));
        if (replies) link = withReplies(link, replies, tail.nodeId);
        // Positions every stage restored from its prefix cache: the first frame starts there.
        const cached = Math.max(0, Math.min(link.cachedTokens ?? 0, input.length - 1));
        // Reported as prompt tokens from the cache (usage.prompt_tokens_details): a replay's
        // input holds the tokens generated so far too, which the stages may have cached.
        result.cachedTokens = Math.min(cached, req.promptTokens.length);
        while (result.tokens.length < budget) {
          if (req.signal?.aborted) {
            result.finishReason = "cancelled";
            break;
          }
          const prefill = !decode;
          // Tokens after this frame's that the tail may decode ahead, within the budget; none
          // after the prompt, so the first token is not held back behind a run.
          const ahead = prefill ? 0 : Math.max(
            0,
            Math.min(this.opts.lookahead ?? 16, budget - result.tokens.length - 1),
          );
          const skip = prefill ? cached : 0;
          // A cancel ends the wait at once (a long prompt's prefill, a slow stage): the session
          // is closed below, and the stages drop the work they still had for it.
          const pass = () =>
            untilAborted(
              this.pass(first.nodeId, link!, Int32Array.from(input.slice(skip)), ahead, skip),
              req.signal,
            );
          const tPass = performance.now();
          const tokens = decode
            ? await decode.run(pass)
            : await withSpan("llm.prefill", { "llm.tokens": input.length }, pass);
          if (!tFirst) tFirst = performance.now();
          if (failedAt && !decode) {
            this.opts.onResumed?.({
              requestId: req.requestId,
              chain: chain.map((c) => `${c.nodeId}[${c.from},${c.to})`).join(" → "),
              waitedMs: Math.round(tPass - failedAt),
              replayedTokens: input.length,
              replayMs: Math.round(performance.now() - tPass),
            });
            failedAt = 0;
          }
          takenBackSince = 0;
          let ended = false;
          for (const [i, token] of tokens.entries()) {
            // A token decoded ahead counts as a step of its own: a cancel between steps holds.
            if (i > 0 && req.signal?.aborted) {
              result.finishReason = "cancelled";
              ended = true;
              break;
            }
            const index = result.tokens.length;
            result.tokens.push(token);
            if (req.onToken?.(token, index) === false) {
              result.finishReason = "stopped";
              ended = true;
            } else if (!req.ignoreEog && req.isEog(token.id)) {
              result.finishReason = "stop";
              ended = true;
            }
            if (ended) break;
          }
          if (ended) break;
          input = [tokens[tokens.length - 1].id];
          decode ??= openSpan("llm.decode");
        }
        decode?.end();
        await link.close("done");
        result.timeToFirstTokenMs = tFirst - t0;
        result.decodeMs = performance.now() - tFirst;
        return result;
      } catch (e) {
        decode?.end(e);
        if (req.signal?.aborted) {
          // Cancelled mid-pass, or a failure after the cancel: no replay for a gone client.
          await link?.close("cancelled");
          return cancelled();
        }
        await link?.close("replanned");
        // A replay that finds a stage full (every session of a lost replica moving to the
        // survivors at once) waits for room as for a settling placement: its client has output
        // already, which an error would throw away.
        const replaying = attempt > 0 || result.tokens.length > 0;
        if (isStageBusy(e) && this.provider.busy?.()) {
          // Another replica has not refused it: go there now (a new session id), rather than
          // answer a 429 or wait for room here while the cluster has it elsewhere.
          stale++;
          continue;
        }
        if (isStageBusy(e)) {
          // Every replica is full (its --max-sessions, or its KV budget): wait for room, as
          // llama.cpp's and vLLM's servers queue for a slot. Before, a new request was failed at
          // once: a 429, or after a stream's 200 an error in the stream that no SDK retries,
          // although its head had admitted it, whenever several heads shared the stages or the
          // KV budget held fewer sessions than --max-sessions. Polled with backoff (a refusal
          // is cheap); still full after the recovery timeout, the stage's refusal is the answer
          // (a replay's is "no room", as before).
          busySince ||= performance.now();
          const waited = performance.now() - busySince;
          if (waited > recoveryMs) {
            if (!replaying) throw e;
            throw new NoPlacementError(`no room: ${(e as Error).message}`);
          }
          busyPolls++;
          const delay = Math.min(BUSY_POLL_MAX_MS, 25 * 2 ** Math.min(busyPolls, 4));
          await untilAborted(new Promise((r) => setTimeout(r, delay)), req.signal).catch(() => {});
          continue;
        }
        busySince = 0;
        busyPolls = 0;
        if (e instanceof StaleEpochError) {
          // Gossip has not converged on one plan yet: read the chain again shortly, blaming
          // nobody; give up only after the recovery timeout.
          if (++stale * 100 > recoveryMs) {
            throw new NoPlacementError(`the placement did not settle: ${(e as Error).message}`);
          }
          await untilAborted(new Promise((r) => setTimeout(r, 100)), req.signal).catch(() => {});
          continue;
        }
        if (!(e instanceof StageLinkError)) throw e;
        failedAt ||= performance.now();
        if (e instanceof ReplyStreamError && !alongChain) {
          // The chain answered and only the tail's stream to this head failed (a one-way fault
          // between them): the same stages (the chain is read again, and stays as it was unless
          // the plan moved), tokens coming back along it. Blamed, the tail was
          // avoided for the rest of the request, although gossip still held it alive and no
          // re-plan would come, and the request failed after the recovery timeout.
          alongChain = true;
          attempt++;
          result.failures.push({ nodeId: e.nodeId, message: e.message });
          if (attempt > (this.opts.maxRecoveries ?? 8)) {
            throw new NoPlacementError(
              `gave up after ${attempt} stage failures; last: ${e.nodeId}: ${e.message}`,
            );
          }
          this.opts.log?.(
            `request ${req.requestId}: ${e.message} (the tail ${e.nodeId}); replaying ` +
              `${req.promptTokens.length + result.tokens.length} tokens without excluding it, ` +
              `tokens coming back along the chain for the rest of the request`,
            { stage: e.nodeId, excluded: [...exclude] },
          );
          continue;
        }
        // A stage that closed the session because gossip declared its opener gone names itself,
        // but the opener is the one that failed: blamed, a healthy stage would be avoided for
        // the rest of the request (with no other host of its layers, until it gave up).
        const opener = goneOpener(e.message);
        const self = opener !== undefined && opener === this.opts.nodeId;
        if (self) {
          // This head was the one declared gone (it froze, or was cut off): every stage is
          // fine. Replay on the same chain once they have seen it back, blaming nobody (a stage
          // that has not yet closes the new session at once).
          takenBackSince ||= performance.now();
          const grace = Math.min(this.opts.takeBackMs ?? 8_000, recoveryMs);
          if (performance.now() - takenBackSince < grace) {
            if (result.failures.at(-1)?.nodeId !== opener) {
              result.failures.push({ nodeId: opener, message: e.message });
              this.opts.log?.(
                `request ${req.requestId}: gossip declared this head (${opener}) gone and ` +
                  `its stages closed the session; replaying ` +
                  `${req.promptTokens.length + result.tokens.length} tokens once they see it ` +
                  `back`,
              );
            }
            await untilAborted(new Promise((r) => setTimeout(r, 100)), req.signal).catch(
              () => {},
            );
            continue;
          }
          // Still gone to that stage after the grace: a one-sided fault (its gossip does not
          // hear this head, which reaches it). Blamed as any failed stage, so the request moves
          // to another replica or host instead of waiting out the recovery timeout.
          takenBackSince = 0;
        }
        const blamed = self ? e.nodeId : opener ?? e.nodeId;
        attempt++;
        result.failures.push({ nodeId: blamed, message: e.message });
        const failed = chain.find((s) => s.nodeId === blamed);
        exclude.add(stageKey(blamed, failed?.version));
        this.opts.onStageFailure?.(blamed);
        this.opts.log?.(
          `request ${req.requestId}: stage on ${blamed} failed (${e.message}); ` +
            `re-placing and replaying ${req.promptTokens.length + result.tokens.length} tokens`,
          { stage: stageKey(blamed, failed?.version), excluded: [...exclude] },
        );
        if (attempt > (this.opts.maxRecoveries ?? 8)) {
          throw new NoPlacementError(
            `gave up after ${attempt} stage failures; last: ${e.nodeId}: ${e.message}`,
          );
        }
      }
    }
  }

  /**
   * One step down the chain: the first stage gets the token ids, the tail answers a token (and
   * the tokens it decoded ahead, up to `lookahead`).
   */
  private async pass(
    firstNode: string,
    link: SessionLink,
    tokens: Int32Array,
    lookahead: number,
    cachedPrefix: number,
  ): Promise<SampledToken[]> {
    const out = await guard(
      firstNode,
      () => link.step({ tokens, lookahead, ...(cachedPrefix ? { cachedPrefix } : {}) }),
    );
    if (out.kind !== "token") {
      throw new Error(`the chain answered ${out.kind}, expected a sampled token`);
    }
    return [out.token, ...(out.more ?? []).slice(0, lookahead)];
  }
}
