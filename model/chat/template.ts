/**
 * Chat templates: turn a conversation into the prompt text a model was trained on, from the
 * Jinja template in the GGUF's `tokenizer.chat_template` (rendered with `@huggingface/jinja`,
 * the way transformers' `apply_chat_template` does), or a plain transcript when the file has none.
 *
 * @module
 */
import { Template } from "@huggingface/jinja";
import type { MetadataLike, Tokenizer } from "../tokenizer/mod.ts";

/** One turn of a conversation. */
export interface ChatMessage {
  /**
   * "system", "user", "assistant" (templates may accept others, e.g. "tool"); "developer" is
   * rendered as "system", as OpenAI treats it.
   */
  role: string;
  /** The turn's text. */
  content: string;
}

/** A rendered conversation, ready to tokenize. */
export interface RenderedChat {
  /** The prompt text. */
  text: string;
  /**
   * Whether the tokenizer should prepend BOS: the vocabulary asks for it and the template did
   * not already write it (Llama-3 templates start with `{{ bos_token }}`).
   */
  addBos: boolean;
  /** Whether control-token text (`<|im_start|>`) must become control tokens (template output). */
  parseSpecial: boolean;
}

/**
 * The fallback when a model has no template: a transcript that base models continue naturally.
 *
 * ```
 * System: You are terse.
 * User: Hello
 * Assistant:
 * ```
 */
export const FALLBACK_TEMPLATE: string = "{% for m in messages %}" +
  "{{ m.role[0] | upper }}{{ m.role[1:] }}: {{ m.content }}\n" +
  "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";

/** The template text cannot be parsed or rendered; the message says where. */
export class ChatTemplateError extends Error {
  /** Error name. */
  override name = "ChatTemplateError";
  /** Bad input, not a bug: RPC callers see INVALID_ARGUMENT (HTTP 400). */
  readonly rpcCode = "invalid_argument";
}

/**
 * A model's chat template with its special tokens.
 *
 * @example
 * ```ts
 * const chat = ChatTemplate.fromMetadata(file.metadata, tokenizer);
 * const { text, addBos, parseSpecial } = chat.render([{ role: "user", content: "Hi" }]);
 * const ids = tokenizer.encode(text, { addBos, parseSpecial });
 * ```
 */
export class ChatTemplate {
  private readonly compiled: Template;

  /** Compile `source`; `fromModel` says it came from the GGUF (its output holds control tokens). */
  constructor(
    readonly source: string,
    readonly bosToken: string,
    readonly eosToken: string,
    readonly fromModel: boolean,
    private readonly addBosDefault: boolean,
  ) {
    try {
      this.compiled = new Template(source);
    } catch (e) {
      throw new ChatTemplateError(`the chat template does not parse: ${(e as Error).message}`);
    }
  }

  /**
   * The template of a model: `tokenizer.chat_template` when present and parseable, else
   * {@linkcode FALLBACK_TEMPLATE}. `warning` says why the fallback was taken over a bad template.
   */
  static fromMetadata(md: MetadataLike, tokenizer: Tokenizer): ChatTemplate {
    const src = md.get("tokenizer.chat_template");
    const bos = tokenizer.bos === null ? "" : tokenizer.tokenText(tokenizer.bos);
    const eos = tokenizer.eos === null ? "" : tokenizer.tokenText(tokenizer.eos);
    if (typeof src === "string" && src.trim() !== "") {
      try {
        return new ChatTemplate(src, bos, eos, true, tokenizer.addBos);
      } catch (e) {
        const t = new ChatTemplate(FALLBACK_TEMPLATE, bos, eos, false, tokenizer.addBos);
        t.warning = `tokenizer.chat_template ignored: ${(e as Error).message}`;
        return t;
      }
    }
    return new ChatTemplate(FALLBACK_TEMPLATE, bos, eos, false, tokenizer.addBos);
  }

  /** Set when the model's own template could not be used. */
  warning?: string;

  /** Render `messages`, ending with the assistant's turn opener unless told otherwise. */
  render(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): RenderedChat {
    if (messages.length === 0) throw new ChatTemplateError("messages is empty; send at least one");
    let text: string;
    try {
      text = this.compiled.render({
        // OpenAI's "developer" is the system prompt under its newer name; no template knows it
        // (ChatML would render a turn the model never saw, others refuse the role).
        messages: messages.map((m) => m.role === "developer" ? { ...m, role: "system" } : m),
        add_generation_prompt: opts.addGenerationPrompt ?? true,
        bos_token: this.bosToken,
        eos_token: this.eosToken,
      });
    } catch (e) {
      throw new ChatTemplateError(
        `the chat template failed on these messages: ${(e as Error).message}`,
      );
    }
    const hasBos = this.bosToken !== "" && text.startsWith(this.bosToken);
    return { text, addBos: this.addBosDefault && !hasBos, parseSpecial: this.fromModel };
  }
}
