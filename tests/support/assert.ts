/**
 * Minimal assertions (JSR's @std/assert is not reachable here): equality by deep comparison
 * through node:assert, and a typed throws check.
 */
import { deepStrictEqual } from "node:assert";

/** Assert deep equality; the message shows both sides. */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  deepStrictEqual(actual, expected, msg);
}

/** Assert `cond` is truthy. */
export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new Error(msg);
}

/** Assert `fn` throws an instance of `cls` whose message includes `includes`. */
export function assertThrows(
  fn: () => unknown,
  // deno-lint-ignore no-explicit-any
  cls: new (...args: any[]) => Error,
  includes?: string,
): Error {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof cls)) {
      throw new Error(`expected ${cls.name}, got ${(e as Error)?.name}: ${e}`);
    }
    if (includes && !e.message.includes(includes)) {
      throw new Error(`expected message to include "${includes}", got "${e.message}"`);
    }
    return e;
  }
  throw new Error(`expected ${cls.name} to be thrown`);
}

/** Async variant of assertThrows. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  // deno-lint-ignore no-explicit-any
  cls: new (...args: any[]) => Error,
  includes?: string,
): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof cls)) {
      throw new Error(`expected ${cls.name}, got ${(e as Error)?.name}: ${e}`);
    }
    if (includes && !e.message.includes(includes)) {
      throw new Error(`expected message to include "${includes}", got "${e.message}"`);
    }
    return e;
  }
  throw new Error(`expected ${cls.name} to be thrown`);
}
