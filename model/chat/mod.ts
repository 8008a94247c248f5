/**
 * Chat templates (`tokenizer.chat_template` rendered with `@huggingface/jinja`, or a plain
 * "System:/User:/Assistant:" transcript for models without one).
 *
 * @example
 * ```ts
 * import { ChatTemplate } from "./mod.ts";
 * const chat = ChatTemplate.fromMetadata(file.metadata, tokenizer);
 * const { text, addBos, parseSpecial } = chat.render([{ role: "user", content: "Hi" }]);
 * ```
 *
 * @module
 */
export {
  type ChatMessage,
  ChatTemplate,
  ChatTemplateError,
  FALLBACK_TEMPLATE,
  type RenderedChat,
} from "./template.ts";
