/**
 * The chat templates of the newer families (Qwen3, Gemma 3, Phi-3.5; texts in templates/) render
 * from GGUF metadata as their models expect, through the model's own tokenizer.
 */
import { openGGUF } from "../../../model/gguf/mod.ts";
import { tokenizerFromMetadata } from "../../../model/tokenizer/mod.ts";
import { ChatTemplate, ChatTemplateError } from "../../../model/chat/mod.ts";
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";

const template = (name: string) =>
  Deno.readTextFileSync(new URL(`./templates/${name}.jinja`, import.meta.url));

/** The model's metadata with `tokenizer.chat_template` set to `text`, and its tokenizer. */
async function chatOf(model: string, text: string) {
  const f = await openGGUF(`${FIXTURES}/models/${model}.gguf`);
  const tok = tokenizerFromMetadata(f.metadata);
  const md = { get: (k: string) => k === "tokenizer.chat_template" ? text : f.metadata.get(k) };
  return { f, tok, chat: ChatTemplate.fromMetadata(md, tok) };
}

Deno.test("qwen3: ChatML, earlier turns' reasoning dropped, control tokens", async () => {
  const { f, tok, chat } = await chatOf("qwen3-bpe-q4_0", template("qwen3"));
  try {
    assert(chat.fromModel, chat.warning);
    const r = chat.render([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hi" },
      { role: "assistant", content: "<think>\nThey greet.\n</think>\n\nHello!" },
      { role: "user", content: "Bye" },
    ]);
    assertEquals(
      r.text,
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" +
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n" +
        "<|im_start|>assistant\n",
    );
    const ids = tok.encode(r.text, r);
    const imStart = tok.tokenId("<|im_start|>")!;
    assertEquals(ids[0], imStart, "<|im_start|> is one control token, no BOS before it");
    assertEquals(ids.filter((id) => id === imStart).length, 5);
  } finally {
    f.close();
  }
});

Deno.test("gemma 3: the system prompt joins the first user turn, roles must alternate", async () => {
  const { f, tok, chat } = await chatOf("gemma3-q8_0", template("gemma-3"));
  try {
    const bos = tok.tokenText(tok.bos!);
    const r = chat.render([
      { role: "system", content: "Be brief." },
      { role: "user", content: " Hi " },
      { role: "assistant", content: "Hello!" },
      { role: "user", content: "Bye" },
    ]);
    assertEquals(
      r.text,
      `${bos}<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n` +
        "<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n" +
        "<start_of_turn>model\n",
    );
    assertEquals(r.addBos, false, "the template writes BOS itself");
    assertThrows(
      () => chat.render([{ role: "assistant", content: "first" }]),
      ChatTemplateError,
      "Conversation roles must alternate",
    );
  } finally {
    f.close();
  }
});

Deno.test("phi-3.5: <|user|> / <|assistant|> turns closed by <|end|>", async () => {
  const { f, chat } = await chatOf("phi3-q4_0", template("phi-3.5-mini"));
  try {
    const r = chat.render([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hi" },
    ]);
    assertEquals(r.text, "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n");
  } finally {
    f.close();
  }
});
