/**
 * What every bench's command line shares: usage errors (exit status 2, like llmctl), flag values
 * read in turn, and the `--help` / error handling of the entry point.
 */

/** A bad flag: exit status 2, like every llmctl / bench usage error. */
export class UsageError extends Error {}

/** Reads flags in order: `next()` gives each flag, `value()` / `count()` the value after it. */
export class Flags {
  #i = -1;
  #flag = "";
  constructor(private readonly args: string[]) {}

  /** The next flag, or undefined when all are read. */
  next(): string | undefined {
    this.#flag = this.args[++this.#i];
    return this.#flag;
  }

  /** The current flag's value; a usage error when it is missing. */
  value(): string {
    const v = this.args[++this.#i];
    if (v === undefined) throw new UsageError(`${this.#flag} needs a value`);
    return v;
  }

  /** The current flag's value as a positive integer. */
  count(): number {
    const v = Number(this.value());
    if (!Number.isInteger(v) || v <= 0) {
      throw new UsageError(`${this.#flag} needs a positive integer`);
    }
    return v;
  }
}

/** Run a bench's `main` with `Deno.args`: `--help` prints `usage`, errors exit 2 (usage) or 1. */
export async function runBench(
  name: string,
  usage: string,
  main: (args: string[]) => Promise<void>,
): Promise<void> {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(usage);
    Deno.exit(0);
  }
  try {
    await main(Deno.args);
  } catch (e) {
    console.error(`bench ${name}: ${(e as Error).message}`);
    Deno.exit(e instanceof UsageError ? 2 : 1);
  }
  // Done: end now. A client library's handle left open (an HTTP/2 session to an agent that has
  // left, say) kept `bench scale` alive for minutes after it printed its result.
  Deno.exit(0);
}
