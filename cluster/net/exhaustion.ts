/**
 * Telling "this process is out of file descriptors (or socket buffers)" apart from a peer's
 * failure: an accept or a connect that fails with EMFILE, ENFILE or ENOBUFS says nothing about
 * the other end.
 *
 * @module
 */

/** The errno names of a local resource limit. */
const LOCAL_LIMIT_CODES = new Set(["EMFILE", "ENFILE", "ENOBUFS"]);
/** Deno's words for them ("Too many open files (os error 24)"; 23 is ENFILE, 105 ENOBUFS). */
const LOCAL_LIMIT_TEXT = /\(os error (24|23|105)\)|too many open files/i;

/**
 * Whether `e` (or an error it wraps, through `cause`) was raised by this process running out of
 * file descriptors or socket buffers. Only errors made here count: a status a peer sent (a
 * ConnectError read off the wire carries no `cause`) is its own failure even when its text
 * quotes an EMFILE of its own.
 */
export function isLocalExhaustion(e: unknown): boolean {
  for (let err = e, depth = 0; err && depth < 8; depth++) {
    const x = err as { code?: unknown; name?: string; message?: unknown; cause?: unknown };
    if (typeof x.code === "string" && LOCAL_LIMIT_CODES.has(x.code)) return true;
    // Deno's own socket errors are plain Errors with the OS's words and no code; a failure a
    // peer reported arrives as a ConnectError or a StageLinkError, whose text is not ours.
    if (x.name === "Error" && typeof x.message === "string" && LOCAL_LIMIT_TEXT.test(x.message)) {
      return true;
    }
    err = x.cause;
  }
  return false;
}

/** What a user reads when this agent is out of descriptors, naming the limit to raise. */
export function exhaustionMessage(what: string, e: unknown): string {
  return `this agent is out of file descriptors (or socket buffers) and could not ${what}: ` +
    `${(e as Error)?.message ?? e}. Raise its limit (ulimit -n, LimitNOFILE=) or find what ` +
    `holds its connections (ls /proc/<pid>/fd)`;
}
