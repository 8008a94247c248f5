/**
 * `llmctl tui` in a real terminal (tmux, 80×24) against a real 2-agent cluster: both nodes with
 * their layer ranges, a prompt typed into the Inference tab streams tokens, a killed agent goes
 * suspect then dead, resize redraws, and `q` exits with the terminal restored.
 */
import { createClient } from "@connectrpc/connect";
import { DiscoveryService } from "../../proto/mod.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { startCluster, stopAll, waitForPlacement } from "../support/agents.ts";
import { REPO, STORIES } from "../support/paths.ts";

async function tmux(...args: string[]): Promise<string> {
  const out = await new Deno.Command("tmux", { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`tmux ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

function hasTmux(): boolean {
  try {
    return new Deno.Command("tmux", { args: ["-V"], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}

/** Poll the pane until `pred` holds; returns that screen. */
async function waitScreen(
  session: string,
  what: string,
  pred: (screen: string) => boolean,
  ms = 15_000,
): Promise<string> {
  const end = Date.now() + ms;
  let screen = "";
  while (Date.now() < end) {
    screen = await tmux("capture-pane", "-p", "-t", session);
    if (pred(screen)) return screen;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}; the screen was:\n${screen}`);
}

Deno.test({
  name: "tui in tmux against 2 agents: ranges, inference, suspect → dead, resize, q restores",
  ignore: !hasTmux(),
  fn: async (t) => {
    // Budgets that no single agent can meet: both host layers.
    const agents = await startCluster(["a", "b"], { model: STORIES, memoryBudget: "1.5MB" });
    const session = `dllm-tui-${Deno.pid}`;
    try {
      const info = await waitForPlacement(agents[0], 2);
      const cmd = `NO_COLOR=1 '${Deno.execPath()}' run -A '${REPO}/cli/llmctl.ts' ` +
        `--endpoint 127.0.0.1:${agents[0].rpcPort} tui --no-boot; ` +
        `echo TUI-EXITED $?; sleep 120`;
      await tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd);

      await t.step("both nodes appear with their layer ranges", async () => {
        const ranges = info.nodes.map((n) =>
          `layers [${n.hosted!.fromLayer},${n.hosted!.toLayer}) of 5`
        );
        const screen = await waitScreen(
          session,
          "both node boxes",
          (s) => ranges.every((r) => s.includes(r)) && s.includes("─ a ") && s.includes("─ b "),
        );
        assert(screen.includes("READY"), screen);
        for (const line of screen.split("\n")) assert([...line].length <= 80, line);
      });

      await t.step("the Nodes tab shows both nodes' load, relayed by one agent", async () => {
        await tmux("send-keys", "-t", session, "Tab");
        await waitScreen(session, "CPU figures for a and b", (s) => {
          const rows = s.split("\n").filter((l) => /^│ [ ▶][ab] /.test(l));
          return rows.length === 2 && rows.every((l) => /alive\s+\d+%/.test(l));
        });
      });

      await t.step("the Inference tab streams tokens for a typed prompt", async () => {
        await tmux("send-keys", "-t", session, "Tab", "Tab");
        await waitScreen(session, "the Inference tab", (s) => s.includes("[INFERENCE]"));
        await tmux("send-keys", "-t", session, "Enter");
        await waitScreen(session, "prompt editing", (s) => s.includes("editing"));
        await tmux("send-keys", "-t", session, "-l", " in a small town");
        await tmux("send-keys", "-t", session, "Enter");
        const done = await waitScreen(
          session,
          "the generation to finish",
          (s) => s.includes("done ("),
        );
        assert(done.includes("Once upon a time in a small town"), done);
        assert(/done \((max tokens|end of text)\): [1-9]\d* tokens/.test(done), done);
        const out = done.split("\n").slice(10, 22).join("\n");
        assert(/[a-z]{3,}/.test(out.replace(/OUTPUT/g, "")), `output text:\n${done}`);
        assert(done.includes("stages a[") && done.includes("━▶ b["), done);
      });

      await t.step("a killed agent shows suspect, then dead", async () => {
        // Shift-tab (BTab) back through Models and Nodes.
        await tmux("send-keys", "-t", session, "BTab", "BTab", "BTab");
        await waitScreen(session, "the Cluster tab", (s) => s.includes("[CLUSTER]"));
        agents[1].child.kill("SIGKILL");
        const t0 = Date.now();
        const screen = await waitScreen(
          session,
          "b suspect then dead",
          (s) => s.includes("node b: suspect → dead") && /─ b ─+ DEAD/.test(s),
          10_000,
        );
        assert(screen.indexOf("alive → suspect") < screen.indexOf("suspect → dead"), screen);
        // The local preset: probes every 300 ms, suspicion of a few seconds.
        assert(Date.now() - t0 < 10_000);
        const discovery = createClient(DiscoveryService, agents[0].transport);
        const after = await discovery.getClusterInfo({ includeDeparted: true });
        assertEquals(after.nodes.find((n) => n.id === "b")?.state, 3);
      });

      await t.step("resize redraws at the new size", async () => {
        await tmux("resize-window", "-t", session, "-x", "120", "-y", "40");
        const screen = await waitScreen(
          session,
          "a 120-column frame",
          (s) => s.split("\n").some((l) => l.startsWith("┌") && [...l.trimEnd()].length === 120),
        );
        for (const line of screen.split("\n")) assert([...line].length <= 120, line);
        await tmux("resize-window", "-t", session, "-x", "80", "-y", "24");
      });

      await t.step("q exits and restores the terminal", async () => {
        await tmux("send-keys", "-t", session, "q");
        const screen = await waitScreen(
          session,
          "the TUI to exit",
          (s) => s.includes("TUI-EXITED"),
        );
        assert(screen.includes("TUI-EXITED 0"), screen);
        assert(!screen.includes("DISTRIBUTED-LLM"), `the alternate screen is gone:\n${screen}`);
        const flags = (await tmux(
          "display-message",
          "-p",
          "-t",
          session,
          "#{alternate_on} #{cursor_flag}",
        )).trim();
        assertEquals(flags, "0 1", "normal screen, cursor visible");
      });
    } finally {
      await tmux("kill-session", "-t", session).catch(() => {});
      await stopAll(agents);
    }
  },
});
