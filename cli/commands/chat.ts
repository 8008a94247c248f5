/**
 * `llmctl chat`: an interactive conversation. Each turn sends the whole conversation, rendered
 * with the model's chat template (`tokenizer.chat_template`, or a "System:/User:/Assistant:"
 * transcript for models without one) — by the head agent with --endpoint, else locally — and
 * streams the reply.
 * Commands: `/reset` forgets the conversation, `/system <text>` sets the system prompt (and
 * resets), `/history` prints the turns, `/exit` (or end of input) quits. A thinking model's
 * `<think>…</think>` block is shown in gray (`--hide-reasoning` leaves it out) and kept out of
 * the history; `--no-think` asks the template for none (`enable_thinking: false`).
 */
import { CliError, connect, endpointGiven, type GlobalOptions, streamCut } from "../client.ts";
import { intOption, numberOption, writeOut } from "../common.ts";
import { palette } from "../format.ts";
import {
  type ChatMessage,
  ChatTemplate,
  promptOpensReasoning,
  type ReasoningPiece,
  ReasoningSplitter,
} from "../../model/chat/mod.ts";
import {
  clusterModelName,
  modelCommandBase,
  openEngine,
  refuseLocalOptions,
} from "./model_options.ts";
import { SAMPLING_DEFAULTS } from "../../model/sampling_defaults.ts";

/** One turn of the conversation. */
export interface Turn {
  role: "user" | "assistant";
  content: string;
}

/** The conversation as chat messages: the system prompt (if any), then the turns. */
export function chatMessages(system: string, turns: Turn[]): ChatMessage[] {
  return [...(system ? [{ role: "system", content: system }] : []), ...turns];
}

/**
 * Where a reply ends for a model without a chat template: the model starting the user's next
 * turn of the transcript (template models end their turn with an end-of-generation token).
 */
export const TURN_STOP = "\nUser:";

/**
 * Streams text but holds back what could be the start of `stop`, so a stop string never
 * reaches the screen even when it arrives split over several tokens.
 */
export class StopFilter {
  private held = "";
  /** Whether the stop string appeared (push() returns "" from then on). */
  stopped = false;
  /** Everything let through. */
  text = "";

  constructor(private readonly stop: string) {}

  /** Feed a piece; returns what may be shown now. */
  push(piece: string): string {
    if (this.stopped) return "";
    const s = this.held + piece;
    const at = s.indexOf(this.stop);
    if (at >= 0) {
      this.stopped = true;
      this.held = "";
      return this.emit(s.slice(0, at));
    }
    let keep = 0;
    for (let k = Math.min(this.stop.length - 1, s.length); k > 0; k--) {
      if (s.endsWith(this.stop.slice(0, k))) {
        keep = k;
        break;
      }
    }
    this.held = s.slice(s.length - keep);
    return this.emit(s.slice(0, s.length - keep));
  }

  /** The end of the stream: release what was held. */
  flush(): string {
    const s = this.stopped ? "" : this.held;
    this.held = "";
    return this.emit(s);
  }

  private emit(s: string): string {
    this.text += s;
    return s;
  }
}

/** Build the `chat` command. */
export function chatCommand() {
  return modelCommandBase("chat")
    .description(
      "chat interactively (streaming; /reset, /system <text>, /history, /exit), " +
        "through the cluster with --endpoint or with a local model",
    )
    .option("-s, --system <text>", "system prompt", "")
    .option("-n, --max-tokens <n>", "most tokens per reply", intOption(1, 2 ** 31 - 1), 256)
    .option("--temperature <t>", "0 = greedy", numberOption(0, 100), SAMPLING_DEFAULTS.temperature)
    .option("--seed <n>", "RNG seed", intOption(0, 2 ** 32 - 1))
    .option("--no-think", "ask a thinking model (Qwen3) not to reason: enable_thinking false")
    .option("--hide-reasoning", "do not print a thinking model's <think> block")
    .action(async (opts, cmd) => {
      const g = cmd.optsWithGlobals() as GlobalOptions;
      const remote = endpointGiven(g);
      if (remote) refuseLocalOptions(cmd);
      const p = palette();
      const interactive = Deno.stdin.isTerminal();
      let system = opts.system;
      let turns: Turn[] = [];
      const agent = remote ? await connect(g) : undefined;
      await agent?.ready();
      const engine = remote ? undefined : await openEngine(opts);
      const template = engine
        ? ChatTemplate.fromMetadata(engine.file.metadata, engine.tokenizer)
        : undefined;
      const kwargs = opts.think ? undefined : { enable_thinking: false };
      /** Reply text shown: the reasoning gray (or not at all), the answer as it is. */
      let answer = "";
      let shownReasoning = false;
      const display = ({ reasoning, content }: ReasoningPiece) => {
        if (reasoning && !opts.hideReasoning) {
          writeOut(p.gray(reasoning));
          shownReasoning = true;
        }
        if (!content) return;
        // The answer starts on its own line below the reasoning.
        if (shownReasoning && !answer) writeOut("\n\n");
        answer += content;
        writeOut(content);
      };
      const reply = async (messages: ChatMessage[], filter: StopFilter, signal: AbortSignal) => {
        answer = "";
        shownReasoning = false;
        // Through a cluster the prompt is not seen here: a template that opens <think> in its
        // generation prompt shows its reasoning as text (the HTTP API splits it exactly).
        let splitter = new ReasoningSplitter();
        const show = (piece: string) => {
          const out = filter.push(piece);
          if (out) display(splitter.push(out));
        };
        if (agent) {
          await agent.call(async (c) => {
            let received = 0;
            const stream = c.inference.generate({
              model: cmd.getOptionValueSource("model") === "cli"
                ? clusterModelName(opts.model)
                : "",
              // The chat's own turns: text only (no tool calls here).
              messages: messages.map(({ role, content }) => ({ role, content })),
              chatTemplateKwargsJson: kwargs ? JSON.stringify(kwargs) : "",
              maxTokens: opts.maxTokens,
              stop: [TURN_STOP],
              sampler: {
                temperature: opts.temperature,
                seed: opts.seed === undefined ? undefined : BigInt(opts.seed),
              },
            }, { signal });
            try {
              for await (const m of stream) {
                received++;
                show(m.text);
              }
            } catch (e) {
              throw (signal.aborted ? undefined : streamCut(e, c.endpoint, received)) ?? e;
            }
          });
        } else {
          const chat = template!.render(messages, { kwargs });
          if (template!.thinking) splitter = new ReasoningSplitter(promptOpensReasoning(chat.text));
          // Ctrl-C, or the model starting the user's next turn, ends the reply (before, both
          // only stopped its display while generation ran on to max tokens).
          const turnEnded = new AbortController();
          await engine!.generate({
            promptTokens: engine!.tokenizer.encode(chat.text, {
              addBos: chat.addBos,
              parseSpecial: chat.parseSpecial,
              literal: chat.literal,
            }),
            maxTokens: opts.maxTokens,
            sampler: { temperature: opts.temperature, seed: opts.seed },
            onToken: (_id, text) => {
              show(text);
              if (filter.stopped) turnEnded.abort();
            },
            signal: AbortSignal.any([signal, turnEnded.signal]),
          });
        }
        display(splitter.push(filter.flush()));
        display(splitter.finish());
      };
      console.error(
        p.gray(
          `chatting with ${agent ? `the cluster at ${agent.endpoint}` : opts.model}; ` +
            `/reset, /system <text>, /history, /exit`,
        ),
      );
      const prompt = () => interactive && writeOut(p.cyan("you› "));
      prompt();
      try {
        for await (const line of readLines(Deno.stdin.readable)) {
          const input = line.trim();
          if (input === "") {
            prompt();
            continue;
          }
          if (input === "/exit" || input === "/quit") break;
          if (input === "/reset") {
            turns = [];
            console.log(p.gray("(conversation forgotten)"));
          } else if (input === "/system" || input.startsWith("/system ")) {
            system = input.slice("/system".length).trim();
            turns = [];
            console.log(
              p.gray(
                system ? `(system prompt set; conversation reset)` : "(system prompt cleared)",
              ),
            );
          } else if (input === "/history") {
            if (system) console.log(`system: ${system}`);
            for (const t of turns) console.log(`${t.role}: ${t.content}`);
          } else if (input.startsWith("/")) {
            console.log(
              p.gray(`unknown command ${input}; /reset, /system <text>, /history, /exit`),
            );
          } else {
            turns.push({ role: "user", content: input });
            if (interactive) writeOut(p.green("bot› "));
            const filter = new StopFilter(TURN_STOP);
            const abort = new AbortController();
            const onSigint = () => abort.abort();
            Deno.addSignalListener("SIGINT", onSigint);
            try {
              await reply(chatMessages(system, turns), filter, abort.signal);
            } catch (e) {
              if (!abort.signal.aborted) {
                turns.pop();
                const err = e instanceof CliError ? e : new CliError((e as Error).message);
                // A conversation grown past the context: this turn is dropped and the chat goes
                // on (it ended, and its history was lost); anything else ends it.
                if (!/context|too long/i.test(err.message)) throw err;
                console.log(p.gray(`(${err.message}; this turn is dropped: /reset to start over)`));
              }
            } finally {
              Deno.removeSignalListener("SIGINT", onSigint);
            }
            writeOut("\n");
            // The answer only: templates are given no reasoning of earlier turns.
            turns.push({ role: "assistant", content: answer.trim() });
          }
          prompt();
        }
      } finally {
        agent?.close();
        engine?.close();
      }
    });
}

/** Lines of a byte stream (without their newline). */
export async function* readLines(stream: ReadableStream<Uint8Array>): AsyncIterable<string> {
  let buf = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, nl).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
    }
  }
  if (buf) yield buf;
}
