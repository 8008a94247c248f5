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
 * The deploying agent's loop is in deploy.ts, the connections to and chunk holders among the
 * other agents in peers.ts, the models this node knows in entries.ts, an entry's progress in
 * entry.ts, the agent's interface in host.ts.
 *
 * @module
 */
import { create, toBinary } from "@bufbuild/protobuf";
import {
  type DeployRequest,
  type DeployResponse,
  type GetManifestResponse,
  GetManifestResponseSchema,
  type PrepareRequest,
  type TransferProgress,
  TransferProgressSchema,
  TransferState,
  type UndeployRequest,
  type UndeployResponse,
  UndeployResponseSchema,
} from "../../proto/mod.ts";
import { FileSource, type GGUFFile, openGGUF, readGGUF } from "../../model/gguf/mod.ts";
import { ModelId } from "../model_id.ts";
import { RpcFailure } from "../rpc/mod.ts";
import { loadTlsFiles, type TlsMaterial } from "../tls/mod.ts";
import { ModelCache } from "./cache.ts";
import { ChunkFrames } from "./chunk_frames.ts";
import { deployModel } from "./deploy.ts";
import { type Entry, entryProgress } from "./entry.ts";
import { EntryTable } from "./entries.ts";
import { fetchSegments } from "./fetch.ts";
import type { TransferHost, TransferManagerOptions } from "./host.ts";
import { openManifest, readManifestAnswer, segmentsFor } from "./manifest.ts";
import { TransferPeers } from "./peers.ts";
import { MemoryReleaser, readAhead } from "./memory.ts";
import { Semaphore } from "./rate.ts";

/** One chunk FetchChunks serves: its bytes, and the same as an enveloped gRPC message. */
export interface ServedChunk {
  segment: number;
  chunk: number;
  /** The chunk's bytes; valid until the stream's next chunk is asked for. */
  data: Uint8Array;
  /** The enveloped FetchChunksResponse around `data` (same lifetime). */
  envelope(): Uint8Array;
}

/** The transfer side of one agent. */
export class TransferManager {
  readonly #entries: EntryTable;
  readonly #peers: TransferPeers;
  readonly #serve: Semaphore;
  /** Hands freed transfer buffers back to the OS once fetching and serving are quiet. */
  readonly #released = new MemoryReleaser();
  readonly #abort = new AbortController();
  #tls?: Promise<TlsMaterial>;
  #ticker?: ReturnType<typeof setInterval>;
  readonly #corrupt: (seg: number, chunk: number) => boolean;

  /** @param host the agent @param opts cache, limits, TLS */
  constructor(readonly host: TransferHost, readonly opts: TransferManagerOptions) {
    this.#serve = new Semaphore(opts.serveConcurrency ?? 8);
    this.#entries = new EntryTable(host, opts, () => this.#material());
    this.#peers = new TransferPeers(host, opts.tls, (a) => this.#open(a), opts.tlsPeerName);
    this.#corrupt = corruptionHook(opts.corruptChunks);
    this.#ticker = setInterval(() => this.#tick(), 500);
  }

  /** Register the verified caches already on disk (so they are listed and served). */
  async scanCache(): Promise<void> {
    try {
      for await (const e of Deno.readDir(this.opts.cacheDir)) {
        if (!e.isDirectory || !/^[0-9a-f]{64}$/.test(e.name) || this.#entries.has(e.name)) continue;
        try {
          const answer = await readManifestAnswer(`${this.opts.cacheDir}/${e.name}/manifest.bin`);
          const { manifest, signature } = openManifest(answer, await this.#ca());
          const entry = this.#entries.add(manifest, answer, signature);
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
    this.#released.close();
    for (const e of this.#entries.values()) {
      e.cache?.close();
    }
    this.#peers.close();
  }

  // ------------------------------------------------------------------ what the agent calls

  /**
   * Whether the agent may re-plan `modelId` with these members offering it: false while a
   * deploy waits for planned nodes that are alive but do not offer the model yet.
   */
  planReady(modelId: string, offering: string[]): boolean {
    const e = this.#entries.byModel(modelId);
    if (!e?.waitFor) return true;
    const live = new Set(
      // Alive, as the placement loop plans over: a planned node turned suspect is not awaited.
      this.host.members().filter((m) => m.status === "alive").map((m) => m.id),
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
    const e = this.#entries.byModel(modelId);
    if (!e?.cache || e.path || !e.file) return;
    e.range = range;
    e.needed = segmentsFor(e.manifest, e.file, range);
    if (e.needed.every((s) => e.cache!.segmentDone(s))) return;
    const superseded = new AbortController();
    const watch = setInterval(() => {
      if (!current()) superseded.abort();
    }, 250);
    try {
      // The fetch has registered with the cache once started, so the host's early load waits
      // for chunks instead of finding them missing.
      const fetching = this.#fetch(e, e.needed, superseded.signal);
      this.host.beforeFetch?.(modelId, e.file, range);
      await fetching;
    } finally {
      clearInterval(watch);
    }
  }

  // ------------------------------------------------------------------ RPC handlers

  /** GetManifest: by path on this node, or by model id / sha256. */
  async getManifest(req: { path: string; model: string }): Promise<GetManifestResponse> {
    let e: Entry | undefined;
    if (req.path) e = await this.#entries.source(req.path);
    else {
      e = this.#entries.byModel(req.model) ?? this.#entries.get(req.model);
      const served = this.host.served();
      if (
        !e?.path && served?.path && (served.id === req.model || e?.manifest.modelId === served.id)
      ) {
        e = await this.#entries.source(served.path);
      }
    }
    if (!e) throw new RpcFailure("not_found", `${this.host.nodeId} has no model ${req.model}`);
    return create(GetManifestResponseSchema, {
      ...e.answer,
      availableSegments: e.path
        ? e.manifest.segments.map((_, i) => i)
        : e.cache?.doneSegments() ?? [],
      dataEndpoint: this.opts.dataEndpoint?.() ?? "",
    });
  }

  /**
   * FetchChunks: stream chunks from a source file or the verified cache, reading the next chunk
   * while the current one is sent. Each chunk is read into one of two buffers of the call
   * (ChunkFrames) with room for its message header in front, valid until the consumer asks for
   * the next chunk: a stream holds two chunks, however slow its peer, and allocates none per
   * chunk. `envelope()` gives the chunk as the gRPC message the lean server path writes as is.
   */
  async *fetchChunks(
    req: { sha256: string; chunks: { segment: number; chunk: number }[] },
    signal: AbortSignal,
  ): AsyncIterable<ServedChunk> {
    const e = this.#entries.get(req.sha256);
    if (!e) throw new RpcFailure("not_found", `${this.host.nodeId} has no model ${req.sha256}`);
    // A fetcher that gave up while it waited for a permit leaves the line.
    const release = await this.#serve.acquire(signal);
    this.#released.busy();
    const size = e.manifest.chunkSize;
    const frames = new ChunkFrames(size);
    /** Opened inside the try below, so a failure to open gives the permit back too. */
    let source: FileSource | undefined;
    const read = async (
      { segment, chunk }: { segment: number; chunk: number },
      i: number,
    ): Promise<ServedChunk> => {
      const seg = e.manifest.segments[segment];
      if (!seg) throw new RpcFailure("invalid_argument", `no segment ${segment}`);
      const len = Math.max(0, Math.min(size, Number(seg.length) - chunk * size));
      const data = frames.data(i).subarray(0, len);
      let ok: boolean;
      if (source) {
        await source.readInto(Number(seg.offset) + chunk * size, data).catch((err) => {
          throw new RpcFailure("data_loss", `${e.path}: ${(err as Error).message}`);
        });
        ok = true;
      } else ok = (await e.cache?.readChunk(segment, chunk, data)) ?? false;
      if (!ok) {
        throw new RpcFailure(
          "not_found",
          `${this.host.nodeId} does not hold chunk ${chunk} of ${seg.name}`,
        );
      }
      if (len && this.#corrupt(segment, chunk)) data[0] ^= 0xff;
      return { segment, chunk, data, envelope: () => frames.frame(i, segment, chunk, len) };
    };
    try {
      // A handle of its own: reads of concurrent streams no longer queue on one file position.
      // The file may have gone away after it was offered (deleted, moved, unmounted): without
      // its permit back, a few such streams would leave this agent serving nothing at all.
      if (e.path) {
        source = await FileSource.open(e.path).catch((err) => {
          throw new RpcFailure(
            "not_found",
            `${this.host.nodeId} cannot read ${e.path}: ${(err as Error).message}`,
          );
        });
      }
      for await (const c of readAhead(req.chunks, read, 1)) {
        if (signal.aborted) return;
        yield c;
      }
    } finally {
      source?.close();
      release();
      this.#released.idle();
    }
  }

  /** Prepare: verify the manifest, fetch this node's layers, then offer the model. */
  async prepare(req: PrepareRequest): Promise<TransferProgress> {
    if (!req.manifest) throw new RpcFailure("invalid_argument", "Prepare needs a manifest");
    const { manifest, signature } = await this.#open(req.manifest);
    const e = this.#entries.add(manifest, req.manifest, signature);
    // Deployed again after an undeploy stopped its fetch: the stopped fetch ends first, before
    // this Prepare sets anything (its failure clears the wait list and writes its detail), and
    // a fresh one starts below.
    if (e.prepared?.signal.aborted) {
      await e.fetching?.catch(() => {});
      e.detail = "";
    }
    if (req.rateLimitBytesPerSecond > 0) {
      e.limiter.bytesPerSecond = Number(req.rateLimitBytesPerSecond);
    }
    e.waitFor = new Set(req.placement?.stages.map((s) => s.nodeId) ?? []);
    if (req.sourceEndpoint) e.external = req.sourceEndpoint;
    const mine = req.placement?.stages.find((s) => s.nodeId === this.host.nodeId);
    e.range = mine ? { from: mine.fromLayer, to: mine.toLayer } : undefined;
    // One model is deployed at a time: a fetch another Prepare started for another one ends
    // (also when this node serves the one wanted now already).
    for (const other of this.#entries.values()) if (other !== e) other.prepared?.abort();
    const served = this.host.served();
    if (served?.id === manifest.modelId) {
      const sha = await this.#entries.servedSha(served);
      if (sha === manifest.sha256) {
        e.state = TransferState.SOURCE;
        return entryProgress(this.host, e);
      }
      // The same name and size with other bytes (a fine-tune exported again under its old
      // name): the model served now must not stand in for it.
      this.host.log("warn", "this node serves other bytes under the deployed model's id", {
        model: manifest.modelId,
        served: sha ?? "(unknown)",
        deployed: manifest.sha256,
      });
      await this.host.unserve(served.id);
    }
    if (e.path) {
      e.state = TransferState.SOURCE;
      await this.host.adopt(manifest.modelId, await openGGUF(e.path), e.path, manifest.sha256);
      return entryProgress(this.host, e);
    }
    e.state = TransferState.PENDING;
    const prepared = e.prepared ??= new AbortController();
    e.fetching ??= (async () => {
      try {
        const file = await this.#header(e, prepared.signal);
        e.needed = e.range ? segmentsFor(manifest, file, e.range) : [0];
        const fetching = this.#fetch(e, e.needed, prepared.signal);
        if (e.range) this.host.beforeFetch?.(manifest.modelId, file, e.range);
        await fetching;
        // Undeployed or replaced while it fetched: keep the bytes, serve nothing.
        if (prepared.signal.aborted) {
          throw new Error("superseded (undeploy, or another model's deploy)");
        }
        e.state = TransferState.CACHED;
        this.#publish(e);
        await this.host.adopt(manifest.modelId, file, undefined, manifest.sha256);
      } catch (err) {
        e.state = TransferState.FAILED;
        // Stopped on purpose: say so, and not as an error.
        const superseded = prepared.signal.aborted;
        e.detail = superseded
          ? "superseded: undeployed, or another model was deployed"
          : (err as Error).message;
        e.waitFor = undefined;
        this.host.log(superseded ? "info" : "error", "model transfer failed", {
          model: manifest.modelId,
          error: e.detail,
        });
        this.#publish(e);
      } finally {
        e.fetching = undefined;
        if (e.prepared === prepared) e.prepared = undefined;
      }
    })();
    return entryProgress(this.host, e);
  }

  /** Deploy: the deploying agent's side (deploy.ts); yields progress. */
  deploy(req: DeployRequest, signal: AbortSignal): AsyncIterable<DeployResponse> {
    return deployModel(
      {
        host: this.host,
        peers: this.#peers,
        getManifest: (r) => this.getManifest(r),
        open: (a) => this.#open(a),
        entry: (manifest, answer, signature) => this.#entries.add(manifest, answer, signature),
        header: (e) => this.#header(e),
        prepare: (r) => this.prepare(r),
        status: () => this.status(),
      },
      req,
      signal,
    );
  }

  /** Undeploy: stop serving (everywhere unless local_only); purge deletes cached bytes. */
  async undeploy(req: UndeployRequest): Promise<UndeployResponse> {
    const served = this.host.served();
    const want = req.model || served?.id || "";
    const matches = (id: string) => ModelId.parse(id).matches(want);
    const nodes: string[] = [];
    let purged = 0;
    if (served && matches(served.id) && await this.host.unserve(served.id)) {
      nodes.push(this.host.nodeId);
    }
    for (const [sha, e] of [...this.#entries.bySha()]) {
      if (!matches(e.manifest.modelId) && sha !== want) continue;
      e.waitFor = undefined;
      // A deploy still fetching here must not end by serving the model after all.
      e.prepared?.abort();
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
        others.map(async (m) =>
          (await this.#peers.client(m.id)).undeploy({ ...req, localOnly: true })
        ),
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
    const out = [...this.#entries.values()].map((e) => entryProgress(this.host, e));
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
        served: true,
      }));
    }
    return out;
  }

  // ------------------------------------------------------------------ internals

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

  /** Open `e`'s cache directory, recording its manifest there. */
  async #openCache(e: Entry): Promise<ModelCache> {
    const cache = await ModelCache.open(
      this.opts.cacheDir,
      e.manifest,
      toBinary(GetManifestResponseSchema, e.answer),
    );
    if (cache.discarded) {
      this.host.log("warn", "the cache held another segment table under this sha256; deleted", {
        model: e.manifest.modelId,
        sha256: e.manifest.sha256,
        dir: cache.dir,
      });
    }
    return cache;
  }

  /** Fetch (if needed) and parse the cached header. */
  async #header(e: Entry, signal?: AbortSignal): Promise<GGUFFile> {
    if (e.file) return e.file;
    e.cache ??= await this.#openCache(e);
    await this.#fetch(e, [0], signal, true);
    const src = await e.cache.source();
    const file = await readGGUF(src);
    src.parsing = false;
    if (file.fileSize !== Number(e.manifest.fileSize)) {
      throw new Error(`the cached header of ${e.manifest.modelId} does not match its manifest`);
    }
    return e.file = file;
  }

  async #fetch(
    e: Entry,
    segments: number[],
    signal?: AbortSignal,
    headerOnly = false,
  ): Promise<void> {
    e.cache ??= await this.#openCache(e);
    if (segments.every((s) => e.cache!.segmentDone(s))) return;
    const was = e.state;
    e.state = TransferState.FETCHING;
    this.#publish(e);
    this.#released.busy();
    try {
      await fetchSegments({
        cache: e.cache,
        segments,
        peers: () => this.#peers.holding(e.manifest, e.external),
        stats: e.stats,
        concurrency: this.opts.fetchConcurrency ?? 8,
        limiter: e.limiter,
        signal: signal ? AbortSignal.any([this.#abort.signal, signal]) : this.#abort.signal,
        log: (msg, f) => this.host.log("warn", msg, { model: e.manifest.modelId, ...f }),
      });
    } finally {
      this.#released.idle();
      // Cancelled or failed (the caller reports it) or done: no longer fetching. A pending entry
      // whose header just arrived stays pending: reported as cached with the header's bytes
      // done, a deploy's progress read "finished" before its layers were asked for.
      e.state = was === TransferState.PENDING && headerOnly
        ? TransferState.PENDING
        : was === TransferState.FETCHING || was === TransferState.PENDING
        ? TransferState.CACHED
        : was;
      this.#publish(e);
    }
  }

  #tick(): void {
    const now = performance.now();
    for (const e of this.#entries.values()) {
      const dt = (now - e.lastAt) / 1000;
      const db = e.stats.bytesReceived - e.lastBytes;
      e.rate = e.rate === 0 ? db / dt : 0.5 * e.rate + 0.5 * (db / dt);
      // Halving toward zero never reaches it: a stalled source read as 1e-64 B/s.
      if (e.rate < 1) e.rate = 0;
      e.lastAt = now;
      e.lastBytes = e.stats.bytesReceived;
      if (e.state === TransferState.FETCHING) this.#publish(e);
    }
  }

  #publish(e: Entry): void {
    this.host.publish(entryProgress(this.host, e));
  }
}

/** The corruption test hook: "0.2" corrupts each chunk with that probability, "1:0,3:2" those. */
export function corruptionHook(spec: string | undefined): (seg: number, chunk: number) => boolean {
  if (!spec) return () => false;
  const p = Number(spec);
  if (Number.isFinite(p)) return () => Math.random() < p;
  const set = new Set(spec.split(",").map((s) => s.trim()));
  return (seg, chunk) => set.has(`${seg}:${chunk}`) || set.has(`${seg}:*`);
}
