/**
 * Pieces every llmctl command shares: the default model, option parsing with clear errors,
 * and exit codes.
 */
import { InvalidArgumentError } from "@commander-js/extra-typings";
import { fromFileUrl } from "./paths.ts";

/** The bundled demo model (Karpathy's stories260K, MIT; see models/README.md). */
export const DEFAULT_MODEL = fromFileUrl(new URL("../models/stories260K.gguf", import.meta.url));

/** Process exit codes, documented in the README. */
export const ExitCode = {
  ok: 0,
  /** A runtime failure: unreadable model, backend error, an agent's refusal. */
  failure: 1,
  /** Bad usage: unknown flag, invalid value. */
  usage: 2,
  /** No agent answered at the endpoint (not running, wrong address, network down). */
  unreachable: 3,
  /** Ctrl-C (SIGINT) stopped the command; what it had produced was printed (128 + SIGINT). */
  interrupted: 130,
} as const;

/**
 * Thrown by a command that Ctrl-C stopped after it printed what it had (the partial output and
 * its figures): llmctl exits with {@linkcode ExitCode.interrupted} and prints nothing more, as
 * llama.cpp's tools and shells do, so a script can tell a cut-short output from a whole one.
 */
export class Interrupted extends Error {
  override name = "Interrupted";
}

/**
 * Ctrl-C aborts `abort` (the command stops between tokens and prints what it has); a second
 * Ctrl-C exits at once with {@linkcode ExitCode.interrupted}, for a pass too long to wait for.
 * Returns the function that removes the listener.
 */
export function abortOnSigint(abort: AbortController): () => void {
  const onSigint = () => {
    if (abort.signal.aborted) Deno.exit(ExitCode.interrupted);
    abort.abort();
  };
  Deno.addSignalListener("SIGINT", onSigint);
  return () => Deno.removeSignalListener("SIGINT", onSigint);
}

/** Parse an integer option, saying which option was wrong. */
export function intOption(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    // Digits only: Number also reads "0x3", "1e1" and "" (as 0, which turns --top-k off).
    const n = /^\s*-?\d+\s*$/.test(value) ? Number(value) : NaN;
    if (!Number.isInteger(n) || n < min || n > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`;
      throw new InvalidArgumentError(`expected an integer ${range}, got "${value}"`);
    }
    return n;
  };
}

/** Parse a finite number option within [min, max]. */
export function numberOption(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected a number from ${min} to ${max}, got "${value}"`);
    }
    return n;
  };
}

/** Print a JSON value as one line on stdout. */
export function printJson(value: unknown): void {
  console.log(JSON.stringify(value));
}

/** Write text to stdout without a newline (for streaming tokens). */
export function writeOut(text: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(text));
}
