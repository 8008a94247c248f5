/**
 * The id a cluster knows a model by: the GGUF file's base name, its size in bytes and a
 * fingerprint of its content, written "file.gguf@1185376#3f9a2c61d0e4". Two agents serve the
 * same model exactly when their ids are equal; users name it by the file name (with or without
 * ".gguf"), which is what GET /v1/models lists.
 *
 * Why a fingerprint: name and size alone called two files the same model when a fine-tune was
 * exported again under its old name (same shapes, same size), so agents started from different
 * copies joined one pipeline and computed with mixed weights, silently.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { basename } from "node:path";
import type { GGUFFile } from "../model/gguf/mod.ts";

/** Bytes read from the start of each tensor for the fingerprint. */
const SAMPLE = 4096;

/** A parsed model id: `file@size#fingerprint`. */
export class ModelId {
  private constructor(
    /** The file's base name, e.g. "stories260K.gguf". */
    readonly file: string,
    /** The file's size in bytes. */
    readonly size: number,
    /** 12 hex digits of the content's fingerprint ("" where an id was written without one). */
    readonly fingerprint = "",
  ) {}

  /** The id of the file at `path` (any directory) of `size` bytes, with its fingerprint. */
  static of(path: string, size: number, fingerprint = ""): ModelId {
    return new ModelId(basename(path), size, fingerprint);
  }

  /**
   * Parse "file@size#fingerprint" (or "file@size"); an id without "@size" keeps size 0 (a name,
   * not a served file).
   */
  static parse(id: string): ModelId {
    const at = id.lastIndexOf("@");
    const rest = at > 0 ? id.slice(at + 1) : "";
    const hash = rest.indexOf("#");
    const size = Number(hash >= 0 ? rest.slice(0, hash) : rest);
    if (at <= 0 || rest === "" || !Number.isSafeInteger(size)) return new ModelId(basename(id), 0);
    return new ModelId(basename(id.slice(0, at)), size, hash >= 0 ? rest.slice(hash + 1) : "");
  }

  /** The name clients use and /v1/models lists: the file name. */
  get name(): string {
    return this.file;
  }

  /**
   * Whether a client's `name` means this model: the id (with or without its fingerprint), the
   * file name, or it without ".gguf".
   */
  matches(name: string): boolean {
    return name === this.toString() || name === `${this.file}@${this.size}` ||
      name === this.file || name === this.file.replace(/\.gguf$/i, "");
  }

  /** "file@size#fingerprint", the form gossip, placement and RPC messages carry. */
  toString(): string {
    return `${this.file}@${this.size}${this.fingerprint ? `#${this.fingerprint}` : ""}`;
  }
}

/**
 * A GGUF file's content fingerprint: 12 hex digits of a SHA-256 over its header (metadata and
 * tensor index) and the first 4 KiB of every tensor. Cheap where hashing the whole file is not
 * (a 4.5 GB file is 1.2 MB of reads here), and any re-export that changes the metadata or the
 * weights of any tensor changes it. (A deploy also compares the whole file's sha256.)
 */
export async function modelFingerprint(file: GGUFFile): Promise<string> {
  const h = createHash("sha256");
  h.update(await file.readRange(0, file.dataOffset));
  for (const t of file.tensors) {
    const n = Math.min(SAMPLE, t.nBytes ?? 0);
    if (n > 0) h.update(await file.readRange(file.dataOffset + t.offset, n));
  }
  return h.digest("hex").slice(0, 12);
}
