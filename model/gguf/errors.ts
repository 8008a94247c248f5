/**
 * The one error type of the GGUF reader and writer.
 *
 * Every failure to parse a file is a `GGUFError` that names the field that was wrong and the byte
 * offset where it sits, so a user can tell a truncated download from a corrupt header from a file
 * written by a newer tool.
 */

/** A GGUF file (or a request against one) is invalid; `field` and `offset` say where. */
export class GGUFError extends Error {
  /** The field that was wrong, e.g. `tensor_infos[3].n_dims` or `metadata["general.alignment"].value`. */
  readonly field: string;
  /** Byte offset of that field in the file, or undefined when the error is not tied to a position (writer). */
  readonly offset: number | undefined;

  /** `message` is the full text; it should mention `field` and `offset` (see the helpers below). */
  constructor(message: string, field: string, offset?: number) {
    super(message);
    this.name = "GGUFError";
    this.field = field;
    this.offset = offset;
  }
}

/** `GGUF: <problem>: <field> at offset <offset>` — the common shape of a parse error. */
export function ggufError(problem: string, field: string, offset: number): GGUFError {
  return new GGUFError(`GGUF: ${problem}: ${field} at offset ${offset}`, field, offset);
}

/** The file ends before `field` (which needs `need` bytes at `offset`) is complete. */
export function truncatedError(
  field: string,
  need: number | bigint,
  offset: number,
  fileSize: number,
): GGUFError {
  return new GGUFError(
    `GGUF: truncated file: ${field} needs ${need} bytes at offset ${offset}, file has ${fileSize}`,
    field,
    offset,
  );
}
