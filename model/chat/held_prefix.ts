/**
 * What a stream holds back at its end: the longest tail that may still become a marker (a stop
 * string, `</think>`, a tool-call opener) once the next tokens arrive.
 *
 * @example
 * ```ts
 * heldPrefix("Sure.</th", "</think>"); // 4
 * ```
 * @module
 */

/** Length of the longest tail of `text` that is a proper prefix of `marker`. */
export function heldPrefix(text: string, marker: string): number {
  for (let n = Math.min(marker.length - 1, text.length); n > 0; n--) {
    if (text.endsWith(marker.slice(0, n))) return n;
  }
  return 0;
}
