/**
 * A whole model on one backend: open a GGUF file, build its tokenizer and a stage holding every
 * layer, and generate text. The cluster's head agent drives stages the same way, one hop apart.
 */
import type { Backend, KVType } from "../kernels/backend.ts";
import { GGUFError, type GGUFFile, openGGUF } from "./gguf/mod.ts";
import { configFromFile } from "./config.ts";
import { LlamaStage, type Session } from "./llama.ts";
import { Sampler, type SamplerParams, type TokenLogprob, topLogprobs } from "./sampler.ts";
import { type Tokenizer, tokenizerFromMetadata } from "./tokenizer/mod.ts";

/**
 * Open a GGUF file for reading, with errors that name the file: a missing file says so plainly,
 * and parse errors keep their field and offset but gain the path.
 */
export async function openModelFile(path: string): Promise<GGUFFile> {
  try {
    return await openGGUF(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`model file not found: ${path} (give a GGUF file with --model)`);
    }
    if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.IsADirectory) {
      throw new Error(`cannot read model file ${path}: ${(e as Error).message}`);
    }
    if (e instanceof GGUFError) e.message = `${path}: ${e.message}`;
    throw e;
  }
}

/** Options for opening a model. */
export interface EngineOptions {
  /** Positions per session; default min(model context, 4096). */
  nCtx?: number;
  kvType?: KVType;
  /** Most prompt tokens per forward pass. */
  maxBatch?: number;
}

/** A generation request. */
export interface GenerateOptions {
  /** Tokens to feed; when absent `prompt` is tokenized with the model's BOS rule. */
  promptTokens?: number[];
  prompt?: string;
  maxTokens: number;
  sampler?: SamplerParams;
  /** Stop at an end-of-generation token (EOS/EOT). Default true. */
  stopAtEog?: boolean;
  /** Called with each new token and the text it completes (may be "" mid-UTF-8 character). */
  onToken?: (id: number, text: string) => void;
}

/** What a generation produced, with timings. */
export interface GenerateResult {
  promptTokens: number[];
  tokens: number[];
  text: string;
  finishReason: "length" | "stop";
  promptMs: number;
  decodeMs: number;
}

/** A loaded model ready to generate. */
export class Engine {
  private constructor(
    readonly file: GGUFFile,
    readonly tokenizer: Tokenizer,
    readonly stage: LlamaStage,
    private readonly opts: EngineOptions,
  ) {}

  /** Open `path` and load every layer onto `backend`. */
  static async open(path: string, backend: Backend, opts: EngineOptions = {}): Promise<Engine> {
    const file = await openModelFile(path);
    try {
      // The architecture first: "unsupported architecture" says more than a vocabulary error.
      configFromFile(file);
      const tokenizer = tokenizerFromMetadata(file.metadata);
      const stage = await LlamaStage.load(file, backend, { maxBatch: opts.maxBatch });
      return new Engine(file, tokenizer, stage, opts);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** Token ids for `text`, with BOS when the model's metadata asks for it (as llama.cpp does). */
  tokenize(text: string, addBos = this.tokenizer.addBos): number[] {
    return Array.from(this.tokenizer.encode(text, { addBos }));
  }

  /** A fresh session sized by the engine options. */
  newSession(): Session {
    return this.stage.newSession(
      this.opts.nCtx ?? Math.min(this.stage.config.contextLength, 4096),
      this.opts.kvType ?? "f32",
    );
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

  /** Generate up to `maxTokens` tokens after the prompt. */
  async generate(opts: GenerateOptions): Promise<GenerateResult> {
    const promptTokens = opts.promptTokens ?? this.tokenize(opts.prompt ?? "");
    if (promptTokens.length === 0) {
      throw new Error("the prompt is empty and the model adds no BOS token; give a prompt");
    }
    const sampler = new Sampler({ temperature: 0, ...opts.sampler });
    sampler.accept(promptTokens);
    const decoder = this.tokenizer.createDecoder();
    const session = this.newSession();
    const tokens: number[] = [];
    let text = "";
    let finishReason: "length" | "stop" = "length";
    try {
      // The next token after `input`: sampled from the device's candidates when the backend
      // computes them (a few hundred bytes back per step), else from the whole logit row.
      const next = async (input: Int32Array) => {
        const want = sampler.candidateRequest();
        const out = want
          ? await this.stage.forwardCandidates(session, { tokens: input }, want)
          : await this.stage.forward(session, { tokens: input });
        if ("candidates" in out) {
          const { id } = sampler.pickCandidates(out.candidates);
          sampler.accept([id]);
          return id;
        }
        if (!("logits" in out)) throw new Error("a whole-model stage must return logits");
        return sampler.sample(out.logits);
      };
      const t0 = performance.now();
      let id = await next(Int32Array.from(promptTokens));
      const t1 = performance.now();
      const budget = Math.min(opts.maxTokens, session.nCtx - promptTokens.length);
      while (tokens.length < budget) {
        tokens.push(id);
        if ((opts.stopAtEog ?? true) && this.tokenizer.isEog(id)) {
          finishReason = "stop";
          break;
        }
        const piece = decoder.push(id);
        text += piece;
        opts.onToken?.(id, piece);
        if (tokens.length >= budget) break;
        id = await next(Int32Array.of(id));
      }
      const tail = decoder.flush();
      text += tail;
      if (tail) opts.onToken?.(-1, tail);
      return {
        promptTokens,
        tokens,
        text,
        finishReason,
        promptMs: t1 - t0,
        decodeMs: performance.now() - t1,
      };
    } finally {
      this.stage.endSession(session);
    }
  }

  /** Release the backend resources and the file. */
  close(): void {
    this.stage.backend.dispose();
    this.file.close();
  }
}
