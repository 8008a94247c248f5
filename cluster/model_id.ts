/**
 * The id a cluster knows a model by: the GGUF file's base name and its size in bytes, written
 * "file.gguf@1185376". Two agents serve the same model exactly when their ids are equal; users
 * name it by the file name (with or without ".gguf"), which is what GET /v1/models lists.
 *
 * @module
 */
import { basename } from "node:path";

/** A parsed model id: `file@size`. */
export class ModelId {
  private constructor(
    /** The file's base name, e.g. "stories260K.gguf". */
    readonly file: string,
    /** The file's size in bytes. */
    readonly size: number,
  ) {}

  /** The id of the file at `path` (any directory) of `size` bytes. */
  static of(path: string, size: number): ModelId {
    return new ModelId(basename(path), size);
  }

  /** Parse "file@size"; an id without "@size" keeps size 0 (a name, not a served file). */
  static parse(id: string): ModelId {
    const at = id.lastIndexOf("@");
    const size = at > 0 ? Number(id.slice(at + 1)) : NaN;
    if (at <= 0 || !Number.isSafeInteger(size)) return new ModelId(basename(id), 0);
    return new ModelId(basename(id.slice(0, at)), size);
  }

  /** The name clients use and /v1/models lists: the file name. */
  get name(): string {
    return this.file;
  }

  /** Whether a client's `name` means this model: the id, the file name, or it without ".gguf". */
  matches(name: string): boolean {
    return name === this.toString() || name === this.file ||
      name === this.file.replace(/\.gguf$/i, "");
  }

  /** "file@size", the form gossip, placement and RPC messages carry. */
  toString(): string {
    return `${this.file}@${this.size}`;
  }
}
