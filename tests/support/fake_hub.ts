/**
 * A local stand-in for the Hugging Face Hub on 127.0.0.1, speaking the protocol as huggingface_hub
 * and llama.cpp read it (verified against their sources; see cluster/hub/):
 *
 * - `GET /api/models/{owner}/{repo}/tree/{revision}?recursive=true` → JSON array of
 *   `{type, oid, size, path, lfs?: {oid, size, pointerSize}}`, `pageSize` entries a page with a
 *   `Link: <…>; rel="next"` header to the rest;
 * - `HEAD|GET /{owner}/{repo}/resolve/{revision}/{path}` → for an LFS file, 302 to a second
 *   "CDN" path with `X-Repo-Commit`, `X-Linked-Etag` (the quoted sha256), `X-Linked-Size`, `ETag`;
 *   a small file is answered directly;
 * - `GET /cdn/{sha256}?sig=…` → the bytes, with `Accept-Ranges: bytes` and 206 answers to `Range`;
 * - errors as the Hub words them in `X-Error-Code`: 401 `GatedRepo` without a token and 403 with
 *   a wrong one, 401 `RepoNotFound` for an unknown repository asked without a token (404 with
 *   one), 404 `RevisionNotFound`, 404 `EntryNotFound`.
 *
 * Hooks make it misbehave: drop the connection after some bytes, corrupt a byte, answer 503.
 */
import { createHash } from "node:crypto";
import { FIXTURES } from "./paths.ts";

/** One file of a fake repository. */
export interface FakeFile {
  path: string;
  bytes: Uint8Array;
  /** Stored with LFS (big files): listed with lfs.oid and served through the CDN redirect. */
  lfs?: boolean;
}

/** One fake repository. */
export interface FakeRepo {
  files: FakeFile[];
  /** Needs `Authorization: Bearer <token>` with this token. */
  gatedToken?: string;
  /** Branch name → commit; default { main: <sha1 of the repo id> }. */
  branches?: Record<string, string>;
}

/** A request the server saw. */
export interface SeenRequest {
  method: string;
  path: string;
  range: string | null;
  authorization: string | null;
}

/** Misbehaviour, each for the next `n` CDN downloads. */
export interface FakeHubFaults {
  /** End the body after this many bytes, short of its Content-Length (a dropped connection). */
  dropAfterBytes?: { bytes: number; times: number };
  /** Flip a byte in the middle of the body. */
  corrupt?: { times: number };
  /** Answer 503 to any request. */
  unavailable?: { times: number };
  /** Send this many bytes of the body, then nothing more (a stalled transfer). */
  stallAfterBytes?: { bytes: number; times: number };
  /** Send the body in `pieces` pieces, `delayMs` apart (a slow link). */
  trickle?: { pieces: number; delayMs: number; times: number };
  /** Ignore Range and send the whole file with 200. */
  ignoreRange?: { times: number };
  /** List every file (tree and X-Linked-Size) this many bytes larger than it is. */
  listedSizeExtra?: number;
}

const enc = new TextEncoder();

/** sha256 hex. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A git blob oid (sha1 of "blob <n>\0" + bytes), as the Hub lists small files. */
function gitOid(bytes: Uint8Array): string {
  return createHash("sha1").update(enc.encode(`blob ${bytes.length}\0`)).update(bytes).digest(
    "hex",
  );
}

/** A fixture model's bytes. */
export function fixture(name: string): Uint8Array {
  return Deno.readFileSync(`${FIXTURES}/models/${name}`);
}

/** The repositories most tests use. */
export function defaultRepos(): Record<string, FakeRepo> {
  const kq = fixture("kq-q4_k_m.gguf");
  const half = Math.floor(kq.length / 2);
  return {
    "test-org/tiny-GGUF": {
      files: [
        { path: ".gitattributes", bytes: enc.encode("*.gguf filter=lfs\n") },
        { path: "README.md", bytes: enc.encode("# tiny\n") },
        { path: "config.json", bytes: enc.encode("{}"), lfs: false },
        { path: "tiny-Q4_0.gguf", bytes: fixture("tiny-q4_0.gguf"), lfs: true },
        { path: "tiny-Q8_0.gguf", bytes: fixture("tiny-q8_0.gguf"), lfs: true },
        { path: "tiny-F16.gguf", bytes: fixture("tiny-f16.gguf"), lfs: true },
        { path: "mmproj-tiny-F16.gguf", bytes: fixture("tiny-f16.gguf"), lfs: true },
        { path: "weights.safetensors", bytes: enc.encode("not a gguf at all"), lfs: true },
        { path: "kq/kq-Q4_K_M.gguf", bytes: fixture("kq-q4_k_m.gguf"), lfs: true },
        { path: "kq/kq-Q5_K_M.gguf", bytes: fixture("kq-q5_k_m.gguf"), lfs: true },
        { path: "split/big-Q6_K-00001-of-00002.gguf", bytes: kq.slice(0, half), lfs: true },
        { path: "split/big-Q6_K-00002-of-00002.gguf", bytes: kq.slice(half), lfs: true },
      ],
    },
    "test-org/stories260K-GGUF": {
      files: [
        { path: "README.md", bytes: enc.encode("# stories260K\n") },
        { path: "stories260K.gguf", bytes: fixture("stories260K.gguf"), lfs: true },
      ],
    },
    "gated-org/secret-GGUF": {
      gatedToken: "hf_gatedTestTokenDoNotLogMe0123456789abcdef",
      files: [{ path: "secret-Q8_0.gguf", bytes: fixture("tiny-q8_0.gguf"), lfs: true }],
    },
  };
}

/** The fake Hub; `url` is its endpoint (what HF_ENDPOINT would be). */
export class FakeHub {
  readonly seen: SeenRequest[] = [];
  faults: FakeHubFaults = {};
  #server?: Deno.HttpServer;
  #cdnServer?: Deno.HttpServer;
  /** The Hub's endpoint. */
  url = "";
  /** The "CDN": another origin (its own port), as the Hub's LFS redirects leave huggingface.co. */
  cdnUrl = "";

  constructor(readonly repos: Record<string, FakeRepo> = defaultRepos(), readonly pageSize = 4) {}

  /** The commit a repository's branch points at. */
  commit(repo: string, branch = "main"): string {
    return this.repos[repo].branches?.[branch] ??
      (branch === "main" ? createHash("sha1").update(repo).digest("hex") : "");
  }

  /** Start listening on 127.0.0.1: the Hub and its CDN, each on a port of its own. */
  start(): Promise<void> {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => this.#handle(req, false),
    );
    this.#cdnServer = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => this.#handle(req, true),
    );
    this.url = `http://127.0.0.1:${(this.#server.addr as Deno.NetAddr).port}`;
    this.cdnUrl = `http://127.0.0.1:${(this.#cdnServer.addr as Deno.NetAddr).port}`;
    return Promise.resolve();
  }

  /** Stop listening (the ports refuse connections afterwards). */
  async stop(): Promise<void> {
    await this.#server?.shutdown();
    await this.#cdnServer?.shutdown();
    this.#server = this.#cdnServer = undefined;
  }

  /** Requests for a path containing `part`. */
  requests(part: string): SeenRequest[] {
    return this.seen.filter((r) => r.path.includes(part));
  }

  #handle(req: Request, cdn: boolean): Response {
    const url = new URL(req.url);
    const path = decodeURIComponent(url.pathname);
    this.seen.push({
      method: req.method,
      path: url.pathname + url.search,
      range: req.headers.get("range"),
      authorization: req.headers.get("authorization"),
    });
    if (this.faults.unavailable && this.faults.unavailable.times > 0) {
      this.faults.unavailable.times--;
      return new Response("busy", { status: 503 });
    }
    if (cdn) {
      return path.startsWith("/cdn/") ? this.#cdn(req, url) : new Response(null, { status: 404 });
    }
    const tree = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/(.+)$/.exec(url.pathname);
    if (tree) return this.#tree(req, url, tree[1], decodeURIComponent(tree[2]));
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (resolve) {
      return this.#resolve(
        req,
        resolve[1],
        decodeURIComponent(resolve[2]),
        resolve[3].split("/").map(decodeURIComponent).join("/"),
      );
    }
    return new Response("Not Found", { status: 404 });
  }

  /** The repository, or the error the Hub answers for it. */
  #repo(req: Request, id: string): FakeRepo | Response {
    const auth = req.headers.get("authorization");
    const repo = this.repos[id];
    if (!repo) {
      return hubError(auth ? 404 : 401, "RepoNotFound", "Repository not found");
    }
    if (repo.gatedToken && auth !== `Bearer ${repo.gatedToken}`) {
      return hubError(
        auth ? 403 : 401,
        "GatedRepo",
        `Access to model ${id} is restricted. You must have access to it and be authenticated.`,
      );
    }
    return repo;
  }

  #revision(repoId: string, repo: FakeRepo, rev: string): string | undefined {
    const branches = repo.branches ?? { main: this.commit(repoId) };
    if (branches[rev]) return branches[rev];
    return Object.values(branches).includes(rev) ? rev : undefined;
  }

  #tree(req: Request, url: URL, id: string, rev: string): Response {
    const repo = this.#repo(req, id);
    if (repo instanceof Response) return repo;
    const commit = this.#revision(id, repo, rev);
    if (!commit) return hubError(404, "RevisionNotFound", `Invalid rev id: ${rev}`);
    const entries: unknown[] = [];
    const dirs = new Set<string>();
    for (const f of repo.files) {
      const parts = f.path.split("/");
      for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
    }
    for (const d of dirs) {
      entries.push({ type: "directory", oid: gitOid(enc.encode(d)), size: 0, path: d });
    }
    for (const f of repo.files) {
      entries.push(
        f.lfs
          ? {
            type: "file",
            oid: gitOid(enc.encode(`version https://git-lfs.github.com/spec/v1\n${f.path}`)),
            size: f.bytes.length + (this.faults.listedSizeExtra ?? 0),
            path: f.path,
            lfs: {
              oid: sha256Hex(f.bytes),
              size: f.bytes.length + (this.faults.listedSizeExtra ?? 0),
              pointerSize: 134,
            },
          }
          : { type: "file", oid: gitOid(f.bytes), size: f.bytes.length, path: f.path },
      );
    }
    const cursor = Number(url.searchParams.get("cursor") ?? 0);
    const page = entries.slice(cursor, cursor + this.pageSize);
    const headers = new Headers({ "content-type": "application/json" });
    if (cursor + this.pageSize < entries.length) {
      const next = new URL(url);
      next.searchParams.set("cursor", String(cursor + this.pageSize));
      headers.set("link", `<${next.href}>; rel="next"`);
    }
    return new Response(JSON.stringify(page), { headers });
  }

  #resolve(req: Request, id: string, rev: string, path: string): Response {
    const repo = this.#repo(req, id);
    if (repo instanceof Response) return repo;
    const commit = this.#revision(id, repo, rev);
    if (!commit) return hubError(404, "RevisionNotFound", `Invalid rev id: ${rev}`);
    const f = repo.files.find((x) => x.path === path);
    if (!f) {
      const r = hubError(404, "EntryNotFound", `${path} does not exist on "${rev}"`);
      r.headers.set("x-repo-commit", commit);
      return r;
    }
    const headers = new Headers({ "x-repo-commit": commit, "accept-ranges": "bytes" });
    if (f.lfs) {
      const sha = sha256Hex(f.bytes);
      headers.set("x-linked-etag", `"${sha}"`);
      headers.set("x-linked-size", String(f.bytes.length + (this.faults.listedSizeExtra ?? 0)));
      headers.set("etag", `"${gitOid(enc.encode(f.path))}"`);
      headers.set("location", `${this.cdnUrl}/cdn/${sha}?sig=signed-url-secret`);
      return new Response(null, { status: 302, headers });
    }
    headers.set("etag", `"${gitOid(f.bytes)}"`);
    headers.set("content-length", String(f.bytes.length));
    return new Response(req.method === "HEAD" ? null : f.bytes.slice(), { status: 200, headers });
  }

  #cdn(req: Request, url: URL): Response {
    const sha = url.pathname.slice("/cdn/".length);
    const f = Object.values(this.repos).flatMap((r) => r.files).find((x) =>
      x.lfs && sha256Hex(x.bytes) === sha
    );
    if (!f) return new Response("NoSuchKey", { status: 404 });
    let bytes = f.bytes;
    if (this.faults.corrupt && this.faults.corrupt.times > 0) {
      this.faults.corrupt.times--;
      bytes = bytes.slice();
      bytes[bytes.length >> 1] ^= 0xff;
    }
    let start = 0;
    const range = req.headers.get("range");
    const ignore = this.faults.ignoreRange && this.faults.ignoreRange.times > 0;
    if (ignore) this.faults.ignoreRange!.times--;
    if (range && !ignore) {
      const m = /^bytes=(\d+)-$/.exec(range);
      if (!m || Number(m[1]) >= bytes.length) {
        return new Response(null, {
          status: 416,
          headers: { "content-range": `bytes */${bytes.length}` },
        });
      }
      start = Number(m[1]);
    }
    const body = bytes.subarray(start);
    const headers = new Headers({
      "accept-ranges": "bytes",
      "content-length": String(body.length),
      "content-type": "binary/octet-stream",
    });
    if (start > 0) {
      headers.set("content-range", `bytes ${start}-${bytes.length - 1}/${bytes.length}`);
    }
    const trickle = this.faults.trickle;
    if (req.method === "GET" && trickle && trickle.times > 0) {
      trickle.times--;
      const step = Math.ceil(body.length / trickle.pieces);
      let at = 0;
      const stream = new ReadableStream<Uint8Array>({
        async pull(c) {
          if (at > 0) await new Promise((r) => setTimeout(r, trickle.delayMs));
          c.enqueue(body.slice(at, at + step));
          at += step;
          if (at >= body.length) c.close();
        },
      });
      return new Response(stream, { status: start > 0 ? 206 : 200, headers });
    }
    const stall = this.faults.stallAfterBytes;
    if (req.method === "GET" && stall && stall.times > 0) {
      stall.times--;
      const part = body.slice(0, stall.bytes);
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(part);
        },
      });
      return new Response(stream, { status: start > 0 ? 206 : 200, headers });
    }
    const drop = this.faults.dropAfterBytes;
    if (req.method === "GET" && drop && drop.times > 0) {
      drop.times--;
      const cut = drop.bytes;
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(body.slice(0, cut));
          // Give the bytes time to leave, then end short of the Content-Length sent.
          setTimeout(() => c.close(), 50);
        },
      });
      return new Response(stream, { status: start > 0 ? 206 : 200, headers });
    }
    return new Response(req.method === "HEAD" ? null : body.slice(), {
      status: start > 0 ? 206 : 200,
      headers,
    });
  }
}

function hubError(status: number, code: string, message: string): Response {
  return new Response(JSON.stringify({ error: message }), {
    status,
    headers: {
      "content-type": "application/json",
      "x-error-code": code,
      "x-error-message": message,
    },
  });
}
