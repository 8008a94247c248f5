/**
 * Reasoning split from a thinking model's output (model/chat/reasoning.ts), as llama.cpp's
 * server splits it, streamed at any chunk boundary; and the chat template variables
 * (template_kwargs.ts) with the real Qwen3 template: `enable_thinking: false` renders its empty
 * think block exactly.
 */
import { openGGUF } from "../../../model/gguf/mod.ts";
import { tokenizerFromMetadata } from "../../../model/tokenizer/mod.ts";
import {
  ChatTemplate,
  checkTemplateKwargs,
  isThinkingTemplate,
  promptOpensReasoning,
  ReasoningSplitter,
  splitReasoning,
  TemplateKwargsError,
} from "../../../model/chat/mod.ts";
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";

const QWEN3 = Deno.readTextFileSync(new URL("./templates/qwen3.jinja", import.meta.url));
/** QwQ / newer DeepSeek-R1 style: the generation prompt opens the think block. */
const OPENS_THINK = QWEN3.replace(
  "{{- '<|im_start|>assistant\\n' }}",
  "{{- '<|im_start|>assistant\\n<think>\\n' }}",
);

Deno.test("split: think block to reasoning (stripped), whitespace after </think> dropped", () => {
  assertEquals(splitReasoning("<think>\nLet me see.\n</think>\n\nHello!"), {
    reasoning: "Let me see.",
    content: "Hello!",
  });
  // Leading whitespace before <think> is allowed; inner whitespace is kept.
  assertEquals(splitReasoning("\n<think> a\n\n b </think>  x \n"), {
    reasoning: "a\n\n b",
    content: "x \n",
  });
  // No think block at the start: the output is content exactly as generated.
  assertEquals(splitReasoning("  Hi <think>no</think>"), {
    reasoning: "",
    content: "  Hi <think>no</think>",
  });
  // Qwen3's enable_thinking: false writes the empty block in the prompt; one the model writes
  // itself is whitespace only, which is no reasoning.
  assertEquals(splitReasoning("<think>\n\n</think>\n\nOk"), { reasoning: "", content: "Ok" });
  // A tool call inside the think block is reasoning, after it content.
  const call = '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>';
  assertEquals(splitReasoning(`<think>maybe ${call}</think>\n${call}`), {
    reasoning: `maybe ${call}`,
    content: call,
  });
});

Deno.test("split: unclosed think (max_tokens) is all reasoning; a prompt-opened block", () => {
  assertEquals(splitReasoning("<think>\nStill thinking\n</thi"), {
    reasoning: "Still thinking\n</thi",
    content: "",
  });
  assertEquals(splitReasoning("<think>\n"), { reasoning: "", content: "" });
  assertEquals(splitReasoning("<thi"), { reasoning: "", content: "<thi" });
  // Opened by the prompt: only </think> comes.
  assertEquals(splitReasoning("\nPlan.\n</think>\n\nDone", true), {
    reasoning: "Plan.",
    content: "Done",
  });
  assertEquals(splitReasoning("Plan, unfinished", true), {
    reasoning: "Plan, unfinished",
    content: "",
  });
});

Deno.test("streamed split: every chunking gives the whole text's split", () => {
  const texts: [string, boolean][] = [
    ["<think>\nLet me see.\n</think>\n\nHello!", false],
    ["  <think>a </think>b</think>c", false],
    ["<think>x\n</thi", false],
    ["<thinking is fun", false],
    [" \n plain", false],
    ["A\n</think>\n \nB", true],
  ];
  for (const [text, open] of texts) {
    const whole = splitReasoning(text, open);
    for (let i = 0; i <= text.length; i++) {
      for (let j = i; j <= text.length; j++) {
        const s = new ReasoningSplitter(open);
        const parts = [s.push(text.slice(0, i)), s.push(text.slice(i, j)), s.push(text.slice(j))];
        parts.push(s.finish());
        const got = {
          reasoning: parts.map((p) => p.reasoning).join(""),
          content: parts.map((p) => p.content).join(""),
        };
        assertEquals(got, whole, `${JSON.stringify(text)} cut at ${i}, ${j}`);
      }
    }
  }
  // A tag cut across chunks never leaks: "</th" is held until "ink>" decides.
  const s = new ReasoningSplitter();
  assertEquals(s.push("<think>Hmm.</th"), { reasoning: "Hmm.", content: "" });
  assert(s.inside);
  assertEquals(s.push("ink>\n"), { reasoning: "", content: "" });
  assertEquals(s.push("Hi"), { reasoning: "", content: "Hi" });
  assertEquals(s.span(), [0, "<think>Hmm.</think>".length]);
});

Deno.test("thinking templates: Qwen3 is one, the prompt opens no block unless told", () => {
  assert(isThinkingTemplate(QWEN3));
  assert(!isThinkingTemplate("{{ messages[0].content }}"));
  assert(promptOpensReasoning("<|im_start|>assistant\n<think>\n"));
  assert(!promptOpensReasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
});

/** The Qwen3 fixture's metadata with `text` as its chat template. */
async function chatOf(text: string) {
  const f = await openGGUF(`${FIXTURES}/models/qwen3-bpe-q4_0.gguf`);
  const tok = tokenizerFromMetadata(f.metadata);
  const md = { get: (k: string) => k === "tokenizer.chat_template" ? text : f.metadata.get(k) };
  f.close();
  return ChatTemplate.fromMetadata(md, tok);
}

Deno.test("qwen3: enable_thinking false renders the template's empty think block", async () => {
  const chat = await chatOf(QWEN3);
  assert(chat.thinking);
  const user = [{ role: "user", content: "Hi" }];
  const on = chat.render(user).text;
  assertEquals(on, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  assertEquals(chat.render(user, { kwargs: { enable_thinking: true } }).text, on);
  const off = chat.render(user, { kwargs: { enable_thinking: false } });
  assertEquals(off.text, on + "<think>\n\n</think>\n\n");
  assert(!promptOpensReasoning(off.text));
  // The contents are still located (the user's text stays text).
  assertEquals(off.literal, [["<|im_start|>user\n".length, "<|im_start|>user\nHi".length]]);
  // A variable the renderer sets itself cannot be replaced through kwargs.
  assertEquals(
    chat.render(user, { kwargs: { messages: [], add_generation_prompt: false } }).text,
    on,
  );
  const opened = (await chatOf(OPENS_THINK)).render(user).text;
  assert(promptOpensReasoning(opened), opened);
  // A model's own template without <think> is no thinking one.
  assert(!(await chatOf("{{ messages[0].content }}")).thinking);
});

Deno.test("template kwargs: an object, bounded, no reserved names, enable_thinking boolean", () => {
  const path = (raw: unknown) => {
    try {
      checkTemplateKwargs(raw, "kw");
    } catch (e) {
      assert(e instanceof TemplateKwargsError, String(e));
      return e.path;
    }
    return "";
  };
  assertEquals(path({ enable_thinking: false, custom: { a: [1] } }), "");
  assertEquals(path([]), "kw");
  assertEquals(path("x"), "kw");
  assertEquals(path(null), "kw");
  for (const k of ["messages", "tools", "add_generation_prompt", "bos_token", "eos_token"]) {
    assertEquals(path({ [k]: 1 }), `kw.${k}`);
  }
  assertEquals(path({ enable_thinking: "false" }), "kw.enable_thinking");
  assertEquals(path({ big: "x".repeat(20_000) }), "kw");
  assertEquals(path(Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, i]))), "kw");
  let deep: unknown = 1;
  for (let i = 0; i < 100_000; i++) deep = [deep];
  assertEquals(path({ deep }), "kw");
  assertThrows(() => checkTemplateKwargs({ tools: [] }, "kw"), TemplateKwargsError, "reserved");
});
