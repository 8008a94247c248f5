/**
 * A whole model in this process: open a GGUF file, build its tokenizer and a stage holding every
 * layer, and generate text through the same Head, StageHost and tail sampler an agent uses —
 * a chain of one in-process stage. `llmctl generate` and `llmctl chat` without an endpoint use
 * it, so a request gives the same ids here as through one agent or a chain of them.
 */
import type { Backend, KVType } from "../../kernels/backend.ts";
import type { GGUFFile } from "../../model/gguf/mod.ts";
import { openModelFile } from "../../model/engine.ts";
import { checkVocabulary, configFromFile } from "../../model/config.ts";
import { LlamaStage, type Session } from "../../model/llama.ts";
import { type SamplerParams, type TokenLogprob, topLogprobs } from "../../model/sampler.ts";
import { withSamplingDefaults } from "../../model/sampling_defaults.ts";
import { type Tokenizer, tokenizerFromMetadata } from "../../model/tokenizer/mod.ts";
import { Head } from "./head.ts";
import { LocalStageLink } from "./local_link.ts";
import { StageHost } from "./stage_host.ts";

/** Options for opening a model. */
export interface EngineOptions {
  /** Positions per session; default min(model context, 4096). */
  nCtx?: number;
  kvType?: KVType;
  /** Most prompt tokens per forward pass. */
  maxBatch?: number;
  /** Greedy tokens decoded ahead per frame on a GPU (HeadOptions.lookahead); default 16. */
  lookahead?: number;
  /** Most milliseconds one lookahead run may take (StageHostOptions.lookaheadMs); default 250. */
  lookaheadMs?: number;
}

/** A generation request. */
export interface GenerateOptions {
  /** Tokens to feed; when absent `prompt` is tokenized with the model's BOS rule. */
  promptTokens?: number[];
  prompt?: string;
  maxTokens: number;
  /** Unset fields take SAMPLING_DEFAULTS (model/sampling_defaults.ts). */
  sampler?: SamplerParams;
  /** Stop at an end-of-generation token (EOS/EOT). Default true. */
  stopAtEog?: boolean;
  /** Called with each new token and the text it completes (may be "" mid-UTF-8 character). */
  onToken?: (id: number, text: string) => void;
  /** Called once the prompt is checked (it fits the context), before its pass. */
  onStart?: () => void;
  /** Ends the generation between tokens (finish reason "cancelled"). */
  signal?: AbortSignal;
}

/** What a generation produced, with timings. */
export interface GenerateResult {
  promptTokens: number[];
  tokens: number[];
  text: string;
  finishReason: "length" | "stop" | "cancelled";
  promptMs: number;
  decodeMs: number;
}

/** A loaded model ready to generate. */
export class Engine {
  private readonly host: StageHost;
  private requests = 0;

  private constructor(
    readonly file: GGUFFile,
    readonly tokenizer: Tokenizer,
    readonly stage: LlamaStage,
    private readonly opts: EngineOptions,
  ) {
    this.host = new StageHost(stage, "local", {
      maxSessions: 4,
      defaultContext: this.nCtx,
      kvType: opts.kvType,
      lookaheadMs: opts.lookaheadMs,
    });
  }

  /** Open `path` and load every layer onto `backend`. */
  static async open(path: string, backend: Backend, opts: EngineOptions = {}): Promise<Engine> {
    const file = await openModelFile(path);
    try {
      // The architecture first: "unsupported architecture" says more than a vocabulary error.
      const config = configFromFile(file);
      const tokenizer = tokenizerFromMetadata(file.metadata);
      checkVocabulary(config, tokenizer.vocabSize);
      const stage = await LlamaStage.load(file, backend, { maxBatch: opts.maxBatch });
      return new Engine(file, tokenizer, stage, opts);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /**
   * Positions per session: as asked, but never past the model's context length (a stage holds no
   * more, so a generation bounded by a larger nCtx failed with "context is full" instead of
   * ending as `length`).
   */
  get nCtx(): number {
    return Math.min(this.opts.nCtx ?? 4096, this.stage.config.contextLength);
  }

  /** Token ids for `text`, with BOS when the model's metadata asks for it (as llama.cpp does). */
  tokenize(text: string, addBos = this.tokenizer.addBos): number[] {
    return Array.from(this.tokenizer.encode(text, { addBos }));
  }

  /** A fresh session sized by the engine options. */
  newSession(): Session {
    return this.stage.newSession(this.nCtx, this.opts.kvType ?? "f32");
  }

  /** Logits after feeding `tokens` to a fresh session. */
  async evaluate(tokens: number[], top: number): Promise<TokenLogprob[]> {
    const session = this.newSession();
    try {
      const out = await this.stage.forward(session, { tokens: Int32Array.from(tokens) });
      if (!("logits" in out)) throw new Error("a whole-model stage must return logits");
      return topLogprobs(out.logits, top);
    } finally {
      this.stage.endSession(session);
    }
  }

  /** Generate up to `maxTokens` tokens after the prompt: a Head over this one stage. */
  async generate(opts: GenerateOptions): Promise<GenerateResult> {
    const promptTokens = opts.promptTokens ?? this.tokenize(opts.prompt ?? "");
    if (promptTokens.length === 0) {
      throw new Error("the prompt is empty and the model adds no BOS token; give a prompt");
    }
    const link = new LocalStageLink("local", this.host);
    const head = new Head(
      { chain: () => Promise.resolve([link]) },
      { lookahead: this.opts.lookahead },
    );
    const decoder = this.tokenizer.createDecoder();
    const stopAtEog = opts.stopAtEog ?? true;
    let text = "";
    const result = await head.generate({
      requestId: `local-${++this.requests}`,
      promptTokens,
      maxTokens: opts.maxTokens,
      maxContext: this.nCtx,
      sampling: withSamplingDefaults(opts.sampler ?? {}),
      isEog: (id) => this.tokenizer.isEog(id),
      ignoreEog: !stopAtEog,
      signal: opts.signal,
      onStart: opts.onStart,
      onToken: (token) => {
        if (stopAtEog && this.tokenizer.isEog(token.id)) return;
        const piece = decoder.push(token.id);
        text += piece;
        opts.onToken?.(token.id, piece);
      },
    });
    const tail = decoder.flush();
    text += tail;
    if (tail) opts.onToken?.(-1, tail);
    return {
      promptTokens,
      tokens: result.tokens.map((t) => t.id),
      text,
      // Stopped by the caller is a stop here: the engine has no stop strings.
      finishReason: result.finishReason === "stopped" ? "stop" : result.finishReason,
      promptMs: result.timeToFirstTokenMs,
      decodeMs: result.decodeMs,
    };
  }

  /** Release the backend resources and the file. */
  close(): void {
    this.host.closeAll();
    this.stage.backend.dispose();
    this.file.close();
  }
}
