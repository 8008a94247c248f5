/**
 * Chat templates (`tokenizer.chat_template` rendered with `@huggingface/jinja`, or a plain
 * "System:/User:/Assistant:" transcript for models without one), and tool calling: the formats
 * templates use for calls (tools.ts) and the parser that finds calls in a model's output
 * (tool_parser.ts); reasoning (`<think>…</think>`) split from the answer (reasoning.ts), and the
 * extra template variables a request may pass (template_kwargs.ts).
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
  CHAT_ROLES,
  type ChatMessage,
  ChatTemplate,
  ChatTemplateError,
  FALLBACK_TEMPLATE,
  type RenderedChat,
  type RenderOptions,
} from "./template.ts";
export {
  argumentsKey,
  checkToolCallId,
  checkTools,
  detectToolFormat,
  type ForcedCall,
  forcedToolCall,
  genericToolPrompt,
  MAX_TOOL_CALL_ID_CHARS,
  MAX_TOOL_CALLS,
  MAX_TOOL_JSON_DEPTH,
  MAX_TOOLS,
  MAX_TOOLS_CHARS,
  parseToolArguments,
  type ToolCallRecord,
  type ToolChoice,
  type ToolDef,
  type ToolFormat,
  toolMarkers,
  ToolSpecError,
} from "./tools.ts";
export {
  type ParsedPiece,
  type ParsedToolCall,
  parseToolOutput,
  ToolCallParser,
  type ToolCallParserOptions,
} from "./tool_parser.ts";
export { heldPrefix } from "./held_prefix.ts";
export {
  isThinkingTemplate,
  promptClosesReasoning,
  promptOpensReasoning,
  type ReasoningPiece,
  ReasoningSplitter,
  splitReasoning,
  THINK_CLOSE,
  THINK_OPEN,
} from "./reasoning.ts";
export {
  checkTemplateKwargs,
  MAX_TEMPLATE_KWARGS_CHARS,
  MAX_TEMPLATE_KWARGS_KEYS,
  RESERVED_TEMPLATE_VARS,
  TemplateKwargsError,
} from "./template_kwargs.ts";
