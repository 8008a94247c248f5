/**
 * The models this node knows, by the sha256 of their bytes: source files it holds (their
 * manifests computed once per path, size and mtime) and verified caches. Two entries may share a
 * model id with other bytes (its fingerprint samples the file, it does not hash all of it):
 * lookups by id prefer the bytes served now.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  type GetManifestResponse,
  GetManifestResponseSchema,
  type TransferManifest,
  TransferState,
} from "../../proto/mod.ts";
import { GGUFError } from "../../model/gguf/mod.ts";
import { RpcFailure } from "../rpc/mod.ts";
import type { TlsMaterial } from "../tls/mod.ts";
import type { Entry } from "./entry.ts";
import { fileMtime, type TransferHost } from "./host.ts";
import { computeManifest, openManifest, sameSegments, signedManifest } from "./manifest.ts";
import { RateLimiter } from "./rate.ts";

/** The models this node knows. */
export class EntryTable {
  readonly #entries = new Map<string, Entry>();
  /** Each file's manifest, by path, size and mtime (computed once: it reads the whole file). */
  readonly #byPath = new Map<string, Promise<PathManifest>>();

  /**
   * @param host the agent (its id, what it serves, its log)
   * @param opts the default fetch rate limit and the chunk size of manifests computed here
   * @param material this node's TLS material: source manifests are signed with its key
   */
  constructor(
    readonly host: TransferHost,
    readonly opts: { rateLimit: number; chunkSize?: number },
    readonly material: () => Promise<TlsMaterial | undefined>,
  ) {}

  /** The entry of these bytes. */
  get(sha256: string): Entry | undefined {
    return this.#entries.get(sha256);
  }

  /** Whether these bytes are known. */
  has(sha256: string): boolean {
    return this.#entries.has(sha256);
  }

  /** Forget these bytes. */
  delete(sha256: string): void {
    this.#entries.delete(sha256);
  }

  /** Every entry. */
  values(): IterableIterator<Entry> {
    return this.#entries.values();
  }

  /** Every entry with its sha256. */
  bySha(): IterableIterator<[string, Entry]> {
    return this.#entries.entries();
  }

  /**
   * The sha256 of the bytes this node serves now: known when it was deployed here, else
   * computed from its file (the manifest a source computes anyway); undefined when the file
   * can no longer be read.
   */
  async servedSha(
    served: { path?: string; sha256?: string; mtimeMs?: number },
  ): Promise<string | undefined> {
    if (served.sha256) return served.sha256;
    if (!served.path) return undefined;
    // The file as it is now is not what was loaded if it changed since (a re-export to the same
    // path): its sha256 would vouch for bytes this node does not serve.
    const now = await fileMtime(served.path);
    if (served.mtimeMs === undefined || now !== served.mtimeMs) return undefined;
    return (await this.source(served.path).catch(() => undefined))?.manifest.sha256;
  }

  /** The entry of model `id`: of the bytes served now where two entries share the id. */
  byModel(id: string): Entry | undefined {
    const sha = this.host.served()?.sha256;
    let first: Entry | undefined;
    for (const e of this.#entries.values()) {
      if (e.manifest.modelId !== id) continue;
      if (!sha || e.manifest.sha256 === sha) return e;
      first ??= e;
    }
    return first;
  }

  /**
   * The entry of this manifest's bytes, made on first sight. A manifest claiming a known sha256
   * with another segment table (chunk size, ranges, hashes) replaces the entry, whose cache is
   * then started clean (ModelCache.open), or is refused while that entry is in use.
   */
  add(manifest: TransferManifest, answer: GetManifestResponse, signature: string): Entry {
    let e = this.#entries.get(manifest.sha256);
    if (e && !sameSegments(e.manifest, manifest)) {
      // Keeping the first manifest seen let a forged one (TLS off: anyone reaching the RPC port
      // can send a Prepare) fill the genuine model's cache directory with other bytes, which a
      // later genuine deploy adopted without fetching.
      const use = this.#use(e);
      if (use) {
        const from = manifest.sourceNodeId || "?";
        throw new RpcFailure(
          "failed_precondition",
          `${this.host.nodeId} already holds ${manifest.sha256} (${e.manifest.modelId}, ${use}) ` +
            `with another segment table than this manifest of ${manifest.modelId} from ${from}; ` +
            `one of them is not that file's: refusing it (undeploy the model here to replace it)`,
        );
      }
      this.host.log("warn", "a manifest with another segment table replaces a known one", {
        sha256: manifest.sha256,
        model: manifest.modelId,
        source: manifest.sourceNodeId,
        was: e.manifest.modelId,
      });
      e.prepared?.abort();
      e.cache?.close();
      this.#entries.delete(manifest.sha256);
      e = undefined;
    }
    if (!e) {
      e = {
        manifest,
        answer: storedAnswer(answer),
        signature,
        stats: { bytesReceived: 0, bytesRefetched: 0, corruptChunks: 0 },
        state: TransferState.PENDING,
        detail: "",
        needed: [0],
        limiter: new RateLimiter(this.opts.rateLimit),
        rate: 0,
        lastBytes: 0,
        lastAt: performance.now(),
      };
      this.#entries.set(manifest.sha256, e);
    } else if (e.manifest.modelId !== manifest.modelId) {
      // The same bytes under a newer id (a cache written before ids carried a fingerprint, or
      // the file deployed under another name): the entry answers to the id deployed now, else
      // lookups by it (planReady, ensure, GetManifest) found nothing.
      e.manifest = manifest;
      e.answer = storedAnswer(answer);
      e.signature = signature;
    }
    return e;
  }

  /** What `e`'s bytes are doing now, if anything a new manifest must not pull from under. */
  #use(e: Entry): string | undefined {
    if (e.path) return `its source file ${e.path}`;
    if (e.fetching || e.cache?.filling) return "being fetched";
    if (this.host.served()?.sha256 === e.manifest.sha256) return "served";
    return undefined;
  }

  /** The entry of a file on this node, its manifest computed once per (path, size, mtime). */
  async source(path: string): Promise<Entry> {
    let stat: Deno.FileInfo;
    try {
      stat = await Deno.stat(path);
    } catch (e) {
      throw new RpcFailure(
        "not_found",
        `${this.host.nodeId} cannot read ${path}: ${(e as Error).message}`,
      );
    }
    if (!stat.isFile) throw new RpcFailure("invalid_argument", `${path} is not a file`);
    // A file rewritten in place (a re-export under the same name) is another model: a new
    // manifest, and the old one no longer names bytes this node can serve.
    const key = `${path}\0${stat.size}\0${stat.mtime?.getTime() ?? 0}`;
    let p = this.#byPath.get(key);
    if (!p) {
      p = (async () => {
        const { manifest, bytes } = await computeManifest(path, {
          nodeId: this.host.nodeId,
          chunkSize: this.opts.chunkSize,
        }).catch((e) => {
          // A request may name any file this agent can read: say that it is not a model, not
          // what its first bytes are (the reader's message quotes them).
          if (e instanceof GGUFError && e.field === "magic") {
            throw new RpcFailure(
              "invalid_argument",
              `${path} is not a GGUF file (it does not start with "GGUF")`,
            );
          }
          throw new RpcFailure("invalid_argument", `${path}: ${(e as Error).message}`);
        });
        const tls = await this.material();
        const answer = signedManifest(bytes, tls && { cert: tls.cert, key: tls.key }, []);
        const { signature } = openManifest(answer, tls?.ca);
        for (const other of this.#entries.values()) {
          if (other.path === path && other.manifest.sha256 !== manifest.sha256) {
            other.path = undefined;
          }
        }
        this.host.log("info", "manifest computed", {
          path,
          model: manifest.modelId,
          sha256: manifest.sha256,
          segments: manifest.segments.length,
          signature,
        });
        return { manifest, answer, signature };
      })();
      for (const k of this.#byPath.keys()) if (k.startsWith(`${path}\0`)) this.#byPath.delete(k);
      this.#byPath.set(key, p);
      p.catch(() => this.#byPath.delete(key));
    }
    const { manifest, answer, signature } = await p;
    // Added each time, not once: the entry is the bytes', and a manifest of the same bytes under
    // another name since (a copy deployed from another path, or --from-here) renamed it. Deployed
    // from this path again, the model is this file's name, as the user sees it last deployed.
    const e = this.add(manifest, answer, signature);
    if (e.path !== path) {
      e.path = path;
      e.state = TransferState.SOURCE;
      e.needed = manifest.segments.map((_, i) => i);
    }
    return e;
  }
}

/** A source file's manifest: its signed answer and the signature scheme that checked it. */
interface PathManifest {
  manifest: TransferManifest;
  answer: GetManifestResponse;
  signature: string;
}

/** `answer` as an entry keeps it: GetManifest fills in the segments held when it answers. */
function storedAnswer(answer: GetManifestResponse): GetManifestResponse {
  return create(GetManifestResponseSchema, { ...answer, availableSegments: [] });
}
