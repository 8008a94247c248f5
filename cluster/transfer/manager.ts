/**
 * The agent's side of model distribution: which models it can serve (files it holds, verified
 * caches), what it is fetching, and the Deploy / Prepare / Undeploy / TransferStatus logic that
 * `transferService` exposes over RPC.
 *
 * How a deploy runs:
 * 1. llmctl calls Deploy on any agent (the deploying agent). It gets the signed manifest from the
 *    source node (computed there once per file), fetches the header into its cache, reads the
 *    tensor index and plans the placement over the targets' budgets and speeds.
 * 2. It sends Prepare (manifest + plan) to every target. A target verifies the manifest, fetches
 *    the header and exactly its own layers' tensors from any peer that has them, then offers the
 *    model in gossip; its re-planning waits until every planned node offers it (or is gone), so
 *    every agent computes the deployed plan and loads its stage from the cache.
 * 3. Deploy streams every target's progress until the planned stages are loaded.
 * After a node loss the normal re-plan runs; `ensure` fetches only what the new range misses.
 *
 * @module
 */
import { type Client, createClient } from "@connectrpc/connect";
import { create, toBinary } from "@bufbuild/protobuf";
import { basename } from "node:path";
import {
  type DeployRequest,
  type DeployResponse,
  DeployResponseSchema,
  type GetManifestResponse,
  GetManifestResponseSchema,
  type Placement,
  type PrepareRequest,
  type TransferManifest,
  type TransferProgress,
  TransferProgressSchema,
  TransferService,
  TransferState,
  type UndeployRequest,
  type UndeployResponse,
  UndeployResponseSchema,
} from "../../proto/mod.ts";
import { fromBinary } from "@bufbuild/protobuf";
import { FileSource, type GGUFFile, openGGUF, readGGUF } from "../../model/gguf/mod.ts";
import { createRpcTransport, RpcFailure, type RpcTransport } from "../rpc/mod.ts";
import { loadTlsFiles, type TlsFiles, type TlsMaterial } from "../tls/mod.ts";
import { ModelCache } from "./cache.ts";
import { type ChunkPeer, fetchSegments, type FetchStats } from "./fetch.ts";
import { computeManifest, HEADER_SEGMENT, openManifest, signedManifest } from "./manifest.ts";
import { RateLimiter, Semaphore, sleep } from "./rate.ts";

/** What the transfer manager needs from its agent. */
export interface TransferHost {
  /** This node's id. */
  readonly nodeId: string;
  /** Live members (this one included) with their RPC endpoint and offered model id. */
  members(): { id: string; endpoint: string; model: string; status: string }[];
  /** The model this agent serves now (id) and the file it was opened from, if local. */
  served(): { id: string; path?: string } | undefined;
  /** The layers this agent hosts now. */
  hostedRange(): { from: number; to: number } | undefined;
  /** Plan the model's placement over these nodes (throws with a message when it cannot). */
  plan(file: GGUFFile, modelId: string, nodes: string[]): Placement;
  /** Serve `file` as model `id` (offer it in gossip; placement does the rest). */
  adopt(id: string, file: GGUFFile, path?: string): Promise<void>;
  /** Stop serving model `id`; false when it was not served. */
  unserve(id: string): Promise<boolean>;
  /** Publish progress as a cluster event. */
  publish(progress: TransferProgress): void;
  /** Diagnostics. */
  log(level: "debug" | "info" | "warn" | "error", msg: string, f?: Record<string, unknown>): void;
}

/** Options of {@linkcode TransferManager}. */
export interface TransferManagerOptions {
  /** Cache root (`--cache-dir`). */
  cacheDir: string;
  /** Default fetch rate limit, bytes/s; 0 = none (`--transfer-rate-limit`). */
  rateLimit: number;
  /** The agent's TLS files: manifests are signed with its key and checked with its CA. */
  tls?: TlsFiles;
  /** Chunk size for manifests this node computes; default 1 MiB. */
  chunkSize?: number;
  /** Concurrent fetch streams per model; default 8. */
  fetchConcurrency?: number;
  /** Concurrent chunk streams this node serves; default 16. */
  serveConcurrency?: number;
  /** Test hook: `DLLM_TEST_CORRUPT_CHUNKS` ("0.2" = probability, or "1:0,3:2" = segment:chunk). */
  corruptChunks?: string;
}

/** One model this node knows: a source file, a cache, or both. */
interface Entry {
  manifest: TransferManifest;
  answer: GetManifestResponse;
  signature: string;
  path?: string;
  source?: FileSource;
  cache?: ModelCache;
  file?: GGUFFile;
  stats: FetchStats;
  state: TransferState;
  detail: string;
  range?: { from: number; to: number };
  needed: number[];
  waitFor?: Set<string>;
  /** A source outside the cluster (llmctl --from-here), host:port. */
  external?: string;
  limiter: RateLimiter;
  rate: number;
  lastBytes: number;
  lastAt: number;
  fetching?: Promise<void>;
}

/** The transfer side of one agent. */
export class TransferManager {
  readonly #entries = new Map<string, Entry>();
  readonly #byPath = new Map<string, Promise<Entry>>();
  readonly #transports = new Map<string, RpcTransport>();
  readonly #peerCache = new Map<string, { at: number; peer?: ChunkPeer }>();
  readonly #serve: Semaphore;
  readonly #abort = new AbortController();
  #tls?: Promise<TlsMaterial>;
  #ticker?: ReturnType<typeof setInterval>;
  readonly #corrupt: (seg: number, chunk: number) => boolean;

  /** @param host the agent @param opts cache, limits, TLS */
  constructor(readonly host: TransferHost, readonly opts: TransferManagerOptions) {
    this.#serve = new Semaphore(opts.serveConcurrency ?? 16);
    this.#corrupt = corruptionHook(opts.corruptChunks);
    this.#ticker = setInterval(() => this.#tick(), 500);
  }

  /** Register the verified caches already on disk (so they are listed and served). */
  async scanCache(): Promise<void> {
    try {
      for await (const e of Deno.readDir(this.opts.cacheDir)) {
        if (!e.isDirectory || !/^[0-9a-f]{64}$/.test(e.name) || this.#entries.has(e.name)) continue;
        try {
          const raw = await Deno.readFile(`${this.opts.cacheDir}/${e.name}/manifest.bin`);
          const answer = fromBinary(GetManifestResponseSchema, raw);
          const { manifest, signature } = openManifest(answer, await this.#ca());
          const entry = this.#entry(manifest, answer, signature);
          entry.cache ??= await ModelCache.open(this.opts.cacheDir, manifest);
          entry.state = TransferState.CACHED;
        } catch (err) {
          this.host.log("warn", "ignoring an unreadable cache entry", {
            dir: e.name,
            error: (err as Error).message,
          });
        }
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }

  /** Stop fetching, close files and transports. */
  close(): void {
    this.#abort.abort();
    clearInterval(this.#ticker);
    for (const e of this.#entries.values()) {
      e.cache?.close();
      e.source?.close();
    }
    for (const t of this.#transports.values()) t.close();
  }

  // ------------------------------------------------------------------ what the agent calls

  /**
   * Whether the agent may re-plan `modelId` with these members offering it: false while a
   * deploy waits for planned nodes that are alive but do not offer the model yet.
   */
  planReady(modelId: string, offering: string[]): boolean {
    const e = this.#byModel(modelId);
    if (!e?.waitFor) return true;
    const live = new Set(
      this.host.members().filter((m) => m.status === "alive" || m.status === "suspect").map((m) =>
        m.id
      ),
    );
    for (const id of e.waitFor) if (live.has(id) && !offering.includes(id)) return false;
    e.waitFor = undefined;
    return true;
  }

  /** Before loading layers [from, to) of a cached model: fetch whatever the cache misses. */
  async ensure(
    modelId: string,
    range: { from: number; to: number },
    current: () => boolean = () => true,
  ): Promise<void> {
    const e = this.#byModel(modelId);
    if (!e?.cache || e.path || !e.file) return;
    e.range = range;
    e.needed = segmentsFor(e.manifest, e.file, range);
    if (e.needed.every((s) => e.cache!.segmentDone(s))) return;
    const superseded = new AbortController();
    const watch = setInterval(() => {
      if (!current()) superseded.abort();
    }, 250);
    try {
      await this.#fetch(e, e.needed, superseded.signal);
    } finally {
      clearInterval(watch);
    }
  }

  // ------------------------------------------------------------------ RPC handlers

  /** GetManifest: by path on this node, or by model id / sha256. */
  async getManifest(req: { path: string; model: string }): Promise<GetManifestResponse> {
    let e: Entry | undefined;
    if (req.path) e = await this.#sourceEntry(req.path);
    else {
      e = this.#byModel(req.model) ?? this.#entries.get(req.model);
      const served = this.host.served();
      if (
        !e?.path && served?.path && (served.id === req.model || e?.manifest.modelId === served.id)
      ) {
        e = await this.#sourceEntry(served.path);
      }
    }
    if (!e) throw new RpcFailure("not_found", `${this.host.nodeId} has no model ${req.model}`);
    return create(GetManifestResponseSchema, {
      ...e.answer,
      availableSegments: e.path
        ? e.manifest.segments.map((_, i) => i)
        : e.cache?.doneSegments() ?? [],
    });
  }

  /** FetchChunks: stream chunks from a source file or the verified cache. */
  async *fetchChunks(
    req: { sha256: string; chunks: { segment: number; chunk: number }[] },
    signal: AbortSignal,
  ): AsyncIterable<{ segment: number; chunk: number; data: Uint8Array }> {
    const e = this.#entries.get(req.sha256);
    if (!e) throw new RpcFailure("not_found", `${this.host.nodeId} has no model ${req.sha256}`);
    const release = await this.#serve.acquire();
    try {
      for (const { segment, chunk } of req.chunks) {
        if (signal.aborted) return;
        const seg = e.manifest.segments[segment];
        if (!seg) throw new RpcFailure("invalid_argument", `no segment ${segment}`);
        let data: Uint8Array | undefined;
        if (e.source) {
          const off = Number(seg.offset) + chunk * e.manifest.chunkSize;
          const len = Math.max(
            0,
            Math.min(e.manifest.chunkSize, Number(seg.length) - chunk * e.manifest.chunkSize),
          );
          // FileSource serializes seek+read: concurrent streams share one handle.
          data = await e.source.read(off, len).catch((err) => {
            throw new RpcFailure("data_loss", `${e.path}: ${(err as Error).message}`);
          });
        } else data = await e.cache?.readChunk(segment, chunk);
        if (!data) {
          throw new RpcFailure(
            "not_found",
            `${this.host.nodeId} does not hold chunk ${chunk} of ${seg.name}`,
          );
        }
        if (data.length && this.#corrupt(segment, chunk)) {
          data = data.slice();
          data[0] ^= 0xff;
        }
        yield { segment, chunk, data };
      }
    } finally {
      release();
    }
  }

  /** Prepare: verify the manifest, fetch this node's layers, then offer the model. */
  async prepare(req: PrepareRequest): Promise<TransferProgress> {
    if (!req.manifest) throw new RpcFailure("invalid_argument", "Prepare needs a manifest");
    const { manifest, signature } = await this.#open(req.manifest);
    const e = this.#entry(manifest, req.manifest, signature);
    if (req.rateLimitBytesPerSecond > 0) {
      e.limiter.bytesPerSecond = Number(req.rateLimitBytesPerSecond);
    }
    e.waitFor = new Set(req.placement?.stages.map((s) => s.nodeId) ?? []);
    if (req.sourceEndpoint) e.external = req.sourceEndpoint;
    const mine = req.placement?.stages.find((s) => s.nodeId === this.host.nodeId);
    e.range = mine ? { from: mine.fromLayer, to: mine.toLayer } : undefined;
    const served = this.host.served();
    if (served?.id === manifest.modelId) {
      e.state = TransferState.SOURCE;
      return this.progress(e);
    }
    if (e.path) {
      e.state = TransferState.SOURCE;
      await this.host.adopt(manifest.modelId, await openGGUF(e.path), e.path);
      return this.progress(e);
    }
    e.state = TransferState.PENDING;
    e.fetching ??= (async () => {
      try {
        const file = await this.#header(e);
        e.needed = e.range ? segmentsFor(manifest, file, e.range) : [0];
        await this.#fetch(e, e.needed);
        e.state = TransferState.CACHED;
        this.#publish(e);
        await this.host.adopt(manifest.modelId, file);
      } catch (err) {
        e.state = TransferState.FAILED;
        e.detail = (err as Error).message;
        e.waitFor = undefined;
        this.host.log("error", "model transfer failed", {
          model: manifest.modelId,
          error: e.detail,
        });
        this.#publish(e);
      } finally {
        e.fetching = undefined;
      }
    })();
    return this.progress(e);
  }

  /** Deploy: the deploying agent's side (see the module comment); yields progress. */
  async *deploy(req: DeployRequest, signal: AbortSignal): AsyncIterable<DeployResponse> {
    if (!req.path) throw new RpcFailure("invalid_argument", "give the GGUF path to deploy");
    const sourceId = req.sourceNodeId || this.host.nodeId;
    const answer = req.sourceEndpoint
      ? await (await this.#clientAt(req.sourceEndpoint)).getManifest({ path: req.path }, {
        signal,
      })
      : sourceId === this.host.nodeId
      ? await this.getManifest({ path: req.path, model: "" })
      : await (await this.#client(sourceId)).getManifest({ path: req.path }, { signal });
    const { manifest, signature } = await this.#open(answer);
    const e = this.#entry(manifest, answer, signature);
    if (req.sourceEndpoint) e.external = req.sourceEndpoint;
    const alive = this.host.members().filter((m) => m.status === "alive").map((m) => m.id);
    const targets = req.nodes.length ? req.nodes : alive;
    for (const t of targets) {
      if (!alive.includes(t)) {
        throw new RpcFailure("not_found", `no alive member ${t}; see \`llmctl nodes list\``);
      }
    }
    // Agents plan over every live member offering the model: the targets, plus nodes already
    // serving it (a source started with --model). Plan over the same set, so they agree.
    const offering = this.host.members().filter((m) =>
      m.status === "alive" && m.model === manifest.modelId && !targets.includes(m.id)
    ).map((m) => m.id);
    const nodes = [...targets, ...offering];
    const index = e.path ? await openGGUF(e.path) : await this.#header(e);
    let plan: Placement;
    try {
      plan = this.host.plan(index, manifest.modelId, nodes);
    } catch (err) {
      throw new RpcFailure(
        "failed_precondition",
        `${manifest.modelId} does not fit on ${targets.join(", ")}: ${(err as Error).message}`,
      );
    } finally {
      if (e.path) index.close();
    }
    yield create(DeployResponseSchema, { model: manifest.modelId, placement: plan, signature });
    const prepare = {
      manifest: answer,
      placement: plan,
      rateLimitBytesPerSecond: req.rateLimitBytesPerSecond,
      sourceEndpoint: req.sourceEndpoint,
    };
    await Promise.all(
      nodes.map(async (t) =>
        t === this.host.nodeId
          ? await this.prepare(prepare as PrepareRequest)
          : (await (await this.#client(t)).prepare(prepare, { signal })).progress
      ),
    );
    for (;;) {
      const progress = await Promise.all(
        nodes.map((t) => this.#remoteProgress(t, manifest, signal)),
      );
      const failed = progress.filter((n) => n.state === TransferState.FAILED);
      // Done: nothing is fetching, and the loaded stages tile the model's layers.
      const idle = progress.every((n) =>
        n.state !== TransferState.FETCHING && n.state !== TransferState.PENDING
      );
      const ranges = progress.filter((n) => n.state === TransferState.LOADED)
        .map((n) => [n.fromLayer, n.toLayer]).sort((a, b) => a[0] - b[0]);
      let at = 0;
      for (const [f, t] of ranges) if (f === at) at = t;
      const loaded = idle && plan.totalLayers > 0 && at === plan.totalLayers;
      if (failed.length || loaded || signal.aborted) {
        yield create(DeployResponseSchema, {
          model: manifest.modelId,
          nodes: progress,
          placement: plan,
          done: true,
          signature,
          message: failed.length
            ? `deploy of ${manifest.modelId} failed on ${
              failed.map((n) => `${n.nodeId}: ${n.detail}`).join("; ")
            }`
            : `deployed ${manifest.modelId} on ${plan.stages.length} node(s): ` +
              plan.stages.map((s) => `${s.nodeId}:[${s.fromLayer},${s.toLayer})`).join(" "),
        });
        if (failed.length) {
          throw new RpcFailure(
            "aborted",
            `deploy failed on ${failed.map((n) => n.nodeId).join(", ")}`,
          );
        }
        return;
      }
      yield create(DeployResponseSchema, { model: manifest.modelId, nodes: progress, signature });
      await sleep(300, signal);
    }
  }

  /** Undeploy: stop serving (everywhere unless local_only); purge deletes cached bytes. */
  async undeploy(req: UndeployRequest): Promise<UndeployResponse> {
    const served = this.host.served();
    const want = req.model || served?.id || "";
    const matches = (id: string) =>
      id === want || basename(id.split("@")[0]) === want ||
      basename(id.split("@")[0]).replace(/\.gguf$/i, "") === want;
    const nodes: string[] = [];
    let purged = 0;
    if (served && matches(served.id) && await this.host.unserve(served.id)) {
      nodes.push(this.host.nodeId);
    }
    for (const [sha, e] of [...this.#entries]) {
      if (!matches(e.manifest.modelId) && sha !== want) continue;
      e.waitFor = undefined;
      if (req.purge && e.cache) {
        e.cache.close();
        purged += await ModelCache.purge(this.opts.cacheDir, sha);
        e.cache = undefined;
        if (!e.path) this.#entries.delete(sha);
      }
    }
    if (!req.localOnly) {
      const others = this.host.members().filter((m) =>
        m.id !== this.host.nodeId && m.status === "alive"
      );
      const answers = await Promise.allSettled(
        others.map(async (m) => (await this.#client(m.id)).undeploy({ ...req, localOnly: true })),
      );
      for (const a of answers) {
        if (a.status === "fulfilled") {
          nodes.push(...a.value.nodes);
          purged += Number(a.value.purgedBytes);
        }
      }
    }
    return create(UndeployResponseSchema, {
      nodes,
      purgedBytes: BigInt(purged),
      message:
        `${want || "no model"}: ${
          nodes.length ? `undeployed from ${nodes.join(", ")}` : "served nowhere"
        }` +
        (req.purge ? `; purged ${purged} cached bytes` : ""),
    });
  }

  /** TransferStatus: every model this node knows. */
  status(): TransferProgress[] {
    const out = [...this.#entries.values()].map((e) => this.progress(e));
    const served = this.host.served();
    if (served && !out.some((p) => p.model === served.id)) {
      const r = this.host.hostedRange();
      out.push(create(TransferProgressSchema, {
        nodeId: this.host.nodeId,
        model: served.id,
        state: r ? TransferState.LOADED : TransferState.SOURCE,
        fromLayer: r?.from ?? 0,
        toLayer: r?.to ?? 0,
        detail: served.path ? `serves ${served.path}` : "",
      }));
    }
    return out;
  }

  /** One entry's progress now. */
  progress(e: Entry): TransferProgress {
    const served = this.host.served();
    const hosted = this.host.hostedRange();
    const loaded = served?.id === e.manifest.modelId && hosted !== undefined;
    const total = e.needed.reduce((s, i) => s + Number(e.manifest.segments[i].length), 0);
    let done = 0;
    if (e.cache) {
      for (const i of e.needed) {
        const len = Number(e.manifest.segments[i].length);
        done += e.cache.segmentDone(i)
          ? len
          : len - e.cache.missingChunks(i).reduce((s, c) => s + e.cache!.chunkLength(i, c), 0);
      }
    }
    const state = e.state === TransferState.FAILED || e.state === TransferState.FETCHING ||
        e.state === TransferState.PENDING
      ? e.state
      : loaded
      ? TransferState.LOADED
      : e.state;
    const range = loaded ? hosted : e.range;
    return create(TransferProgressSchema, {
      nodeId: this.host.nodeId,
      model: e.manifest.modelId,
      sha256: e.manifest.sha256,
      state,
      bytesDone: BigInt(e.path ? total : done),
      bytesTotal: BigInt(total),
      bytesPerSecond: e.rate,
      etaSeconds: e.rate > 0 && total > done ? (total - done) / e.rate : 0,
      bytesRefetched: BigInt(e.stats.bytesRefetched),
      corruptChunks: e.stats.corruptChunks,
      detail: e.detail || (e.path ? `source: ${e.path}` : "") ||
        (e.signature ? `manifest ${e.signature}` : ""),
      fromLayer: range?.from ?? 0,
      toLayer: range?.to ?? 0,
      cachedBytes: BigInt(e.cache?.cachedBytes ?? 0),
      bytesReceived: BigInt(e.stats.bytesReceived),
    });
  }

  // ------------------------------------------------------------------ internals

  #byModel(id: string): Entry | undefined {
    for (const e of this.#entries.values()) if (e.manifest.modelId === id) return e;
    return undefined;
  }

  #entry(manifest: TransferManifest, answer: GetManifestResponse, signature: string): Entry {
    let e = this.#entries.get(manifest.sha256);
    if (!e) {
      e = {
        manifest,
        answer: create(GetManifestResponseSchema, { ...answer, availableSegments: [] }),
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
    }
    return e;
  }

  /** The entry of a file on this node, its manifest computed once per (path, size, mtime). */
  #sourceEntry(path: string): Promise<Entry> {
    const key = path;
    let p = this.#byPath.get(key);
    if (!p) {
      p = (async () => {
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
        const { manifest, bytes } = await computeManifest(path, {
          nodeId: this.host.nodeId,
          chunkSize: this.opts.chunkSize,
        }).catch((e) => {
          throw new RpcFailure("invalid_argument", `${path}: ${(e as Error).message}`);
        });
        const tls = await this.#material();
        const answer = signedManifest(bytes, tls && { cert: tls.cert, key: tls.key }, []);
        const { signature } = openManifest(answer, tls?.ca);
        const e = this.#entry(manifest, answer, signature);
        e.path = path;
        e.source = await FileSource.open(path);
        e.state = TransferState.SOURCE;
        e.needed = manifest.segments.map((_, i) => i);
        this.host.log("info", "manifest computed", {
          path,
          model: manifest.modelId,
          sha256: manifest.sha256,
          segments: manifest.segments.length,
          signature,
        });
        return e;
      })();
      this.#byPath.set(key, p);
      p.catch(() => this.#byPath.delete(key));
    }
    return p;
  }

  async #open(answer: GetManifestResponse) {
    try {
      return openManifest(answer, await this.#ca());
    } catch (e) {
      throw new RpcFailure("permission_denied", (e as Error).message);
    }
  }

  #material(): Promise<TlsMaterial | undefined> {
    if (!this.opts.tls) return Promise.resolve(undefined);
    return this.#tls ??= loadTlsFiles(this.opts.tls);
  }

  async #ca(): Promise<string | undefined> {
    return (await this.#material())?.ca;
  }

  /** Fetch (if needed) and parse the cached header. */
  async #header(e: Entry): Promise<GGUFFile> {
    if (e.file) return e.file;
    e.cache ??= await ModelCache.open(
      this.opts.cacheDir,
      e.manifest,
      toBinary(GetManifestResponseSchema, e.answer),
    );
    await this.#fetch(e, [0]);
    const src = await e.cache.source();
    const file = await readGGUF(src);
    src.parsing = false;
    if (file.fileSize !== Number(e.manifest.fileSize)) {
      throw new Error(`the cached header of ${e.manifest.modelId} does not match its manifest`);
    }
    return e.file = file;
  }

  async #fetch(e: Entry, segments: number[], signal?: AbortSignal): Promise<void> {
    e.cache ??= await ModelCache.open(
      this.opts.cacheDir,
      e.manifest,
      toBinary(GetManifestResponseSchema, e.answer),
    );
    if (segments.every((s) => e.cache!.segmentDone(s))) return;
    const was = e.state;
    e.state = TransferState.FETCHING;
    this.#publish(e);
    try {
      await fetchSegments({
        cache: e.cache,
        segments,
        peers: () => this.#peers(e),
        stats: e.stats,
        concurrency: this.opts.fetchConcurrency ?? 8,
        limiter: e.limiter,
        signal: signal ? AbortSignal.any([this.#abort.signal, signal]) : this.#abort.signal,
        log: (msg, f) => this.host.log("warn", msg, { model: e.manifest.modelId, ...f }),
      });
    } finally {
      // Cancelled or failed (the caller reports it) or done: no longer fetching.
      e.state = was === TransferState.FETCHING || was === TransferState.PENDING
        ? TransferState.CACHED
        : was;
      this.#publish(e);
    }
  }

  /** Peers holding (part of) the model: they offer it in gossip, or computed its manifest. */
  async #peers(e: Entry): Promise<ChunkPeer[]> {
    const ms: { id: string; endpoint: string }[] = this.host.members().filter((m) =>
      m.id !== this.host.nodeId && m.status === "alive" &&
      (m.model === e.manifest.modelId || m.id === e.manifest.sourceNodeId)
    );
    if (e.external) ms.push({ id: `external@${e.external}`, endpoint: e.external });
    const now = Date.now();
    const found = await Promise.all(ms.map(async (m) => {
      const key = `${m.id}@${m.endpoint}/${e.manifest.sha256}`;
      const hit = this.#peerCache.get(key);
      if (hit && now - hit.at < 2000) return hit.peer;
      let peer: ChunkPeer | undefined;
      try {
        const client = await this.#clientAt(m.endpoint);
        const a = await client.getManifest({ model: e.manifest.modelId }, { timeoutMs: 3000 });
        const { manifest } = await this.#open(a);
        if (manifest.sha256 === e.manifest.sha256) {
          const all = a.availableSegments.length === e.manifest.segments.length;
          peer = { id: m.id, client, segments: all ? "all" : new Set(a.availableSegments) };
        }
      } catch { /* not a source (now) */ }
      this.#peerCache.set(key, { at: now, peer });
      return peer;
    }));
    return found.filter((p): p is ChunkPeer => p !== undefined);
  }

  async #client(nodeId: string): Promise<Client<typeof TransferService>> {
    const m = this.host.members().find((x) => x.id === nodeId);
    if (!m) throw new RpcFailure("not_found", `no live member ${nodeId}`);
    return await this.#clientAt(m.endpoint);
  }

  async #clientAt(endpoint: string): Promise<Client<typeof TransferService>> {
    let t = this.#transports.get(endpoint);
    if (!t) {
      // Its own connection (activation streams never queue behind chunks), uncompressed.
      t = await createRpcTransport(endpoint, { tls: this.opts.tls, gzip: false });
      this.#transports.set(endpoint, t);
    }
    return createClient(TransferService, t);
  }

  async #remoteProgress(
    nodeId: string,
    manifest: TransferManifest,
    signal: AbortSignal,
  ): Promise<TransferProgress> {
    try {
      const list = nodeId === this.host.nodeId
        ? this.status()
        : (await (await this.#client(nodeId)).transferStatus({}, { signal, timeoutMs: 3000 }))
          .models;
      return list.find((p) => p.sha256 === manifest.sha256 || p.model === manifest.modelId) ??
        create(TransferProgressSchema, {
          nodeId,
          model: manifest.modelId,
          state: TransferState.PENDING,
        });
    } catch (e) {
      return create(TransferProgressSchema, {
        nodeId,
        model: manifest.modelId,
        state: TransferState.PENDING,
        detail: `unreachable: ${(e as Error).message}`,
      });
    }
  }

  #tick(): void {
    const now = performance.now();
    for (const e of this.#entries.values()) {
      const dt = (now - e.lastAt) / 1000;
      const db = e.stats.bytesReceived - e.lastBytes;
      e.rate = e.rate === 0 ? db / dt : 0.5 * e.rate + 0.5 * (db / dt);
      e.lastAt = now;
      e.lastBytes = e.stats.bytesReceived;
      if (e.state === TransferState.FETCHING) this.#publish(e);
    }
  }

  #publish(e: Entry): void {
    this.host.publish(this.progress(e));
  }
}

/** Segment indices a stage of layers [from, to) reads (always the header). */
export function segmentsFor(
  manifest: TransferManifest,
  file: GGUFFile,
  range: { from: number; to: number },
): number[] {
  const nLayers = Math.max(
    0,
    ...file.tensors.map((t) => Number(/^blk\.(\d+)\./.exec(t.name)?.[1] ?? -1) + 1),
  );
  const hasOutput = file.tensor("output.weight") !== undefined;
  const isTail = range.to >= nLayers;
  const want = (name: string) => {
    const m = /^blk\.(\d+)\./.exec(name);
    if (m) return Number(m[1]) >= range.from && Number(m[1]) < range.to;
    if (name === "token_embd.weight") return range.from === 0 || (isTail && !hasOutput);
    if (name === "output_norm.weight" || name === "output.weight") return isTail;
    return false;
  };
  const out = [0];
  manifest.segments.forEach((s, i) => {
    if (i > 0 && s.name !== HEADER_SEGMENT && want(s.name)) out.push(i);
  });
  return out;
}

/** The corruption test hook: "0.2" corrupts each chunk with that probability, "1:0,3:2" those. */
export function corruptionHook(spec: string | undefined): (seg: number, chunk: number) => boolean {
  if (!spec) return () => false;
  const p = Number(spec);
  if (Number.isFinite(p)) return () => Math.random() < p;
  const set = new Set(spec.split(",").map((s) => s.trim()));
  return (seg, chunk) => set.has(`${seg}:${chunk}`) || set.has(`${seg}:*`);
}
