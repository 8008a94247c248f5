/**
 * llama.cpp's own distributed mode as a reference: `ggml-rpc-server`s on loopback and
 * `llama-bench -ngl 99 --rpc …` splitting the model's layers over them, beside `llama-bench` in one
 * process on the same file and threads. The tools are llama.cpp's own, built from the source
 * node-llama-cpp ships by `sh native/build-llama-tools.sh` in bench/.cache/llamaref (optional,
 * ~25 min on 2 cores); without them the benches say so and skip this reference.
 * @module
 */

/** Where build-llama-tools.sh leaves llama-bench and ggml-rpc-server under `llamaref`. */
export function llamaToolsDir(llamaref: string): string {
  return `${llamaref}llama.cpp-src/build/bin/`;
}

/** Whether llama.cpp's tools are built under `llamaref`. */
export function haveLlamaTools(llamaref: string): boolean {
  try {
    Deno.statSync(`${llamaToolsDir(llamaref)}ggml-rpc-server`);
    Deno.statSync(`${llamaToolsDir(llamaref)}llama-bench`);
    return true;
  } catch {
    return false;
  }
}

/** llama-bench's tokens/s: prefill of `pp` tokens (0: none) and `tg` decodes, one rep each. */
export interface LlamaBenchSpeed {
  pp: number;
  tg: number;
}

/** A set of running ggml-rpc-servers, and llama-bench over them or alone. */
export class LlamaRpcServers {
  private constructor(
    private readonly bin: string,
    private readonly servers: Deno.ChildProcess[],
    /** Their loopback endpoints, host:port. */
    readonly endpoints: string[],
  ) {}

  /** Start `n` servers with `threads` threads each and give them time to listen. */
  static async start(llamaref: string, n: number, threads: number): Promise<LlamaRpcServers> {
    const bin = llamaToolsDir(llamaref);
    const servers: Deno.ChildProcess[] = [];
    const endpoints: string[] = [];
    for (let i = 0; i < n; i++) {
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (l.addr as Deno.NetAddr).port;
      l.close();
      endpoints.push(`127.0.0.1:${port}`);
      servers.push(
        new Deno.Command(`${bin}ggml-rpc-server`, {
          args: ["-H", "127.0.0.1", "-p", String(port), "-t", String(threads)],
          stdout: "null",
          stderr: "null",
        }).spawn(),
      );
    }
    await new Promise((r) => setTimeout(r, 1500));
    return new LlamaRpcServers(bin, servers, endpoints);
  }

  /** llama-bench on `model`: its layers over these servers (`rpc`), or in its own process. */
  async bench(
    model: string,
    o: { pp: number; tg: number; threads: number; rpc: boolean },
  ): Promise<LlamaBenchSpeed> {
    const args = [
      ...["-m", model, "-p", String(o.pp), "-n", String(o.tg), "-r", "1"],
      ...["-t", String(o.threads), "-o", "json"],
      ...(o.rpc ? ["-ngl", "99", "--rpc", this.endpoints.join(",")] : ["-ngl", "0"]),
    ];
    const out = await new Deno.Command(`${this.bin}llama-bench`, {
      args,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    if (!out.success) {
      const err = new TextDecoder().decode(out.stderr).slice(-2000);
      throw new Error(`llama-bench ${args.join(" ")} failed (${out.code}):\n${err}`);
    }
    const rows = JSON.parse(text.slice(text.indexOf("["))) as {
      n_prompt: number;
      n_gen: number;
      avg_ts: number;
    }[];
    return {
      pp: rows.find((r) => r.n_prompt > 0)?.avg_ts ?? NaN,
      tg: rows.find((r) => r.n_gen > 0)?.avg_ts ?? NaN,
    };
  }

  /** Kill the servers and wait for them. */
  async stop(): Promise<void> {
    for (const s of this.servers) {
      try {
        s.kill("SIGKILL");
      } catch { /* gone */ }
      await s.status;
    }
  }
}
