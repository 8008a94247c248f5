// An independent gRPC client: @grpc/grpc-js + @grpc/proto-loader under Node.js, loading the
// same .proto files as the agents. It shares no code with our Connect stack, so it catches
// anything our server gets wrong about the gRPC wire protocol, HTTP/2 or TLS.
//
// Usage: node client.mjs '<json>' where json is
//   { modules: dir with node_modules (the npm --prefix), protoDir: proto/, target: "host:port",
//     tls: null | { ca, cert?, key? } (PEM file paths), deadlineMs?: number }
// Prints one JSON line: { ok: true, clusterInfo, health } or { ok: false, code, details }.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const cfg = JSON.parse(process.argv[2]);
// Resolve the packages from the npm cache dir the test installed them into, not from here.
const require = createRequire(join(cfg.modules, "package.json"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const definition = protoLoader.loadSync(
  ["distributed_llm/v1/discovery.proto", "distributed_llm/v1/node.proto"],
  { includeDirs: [cfg.protoDir], longs: String, enums: String, defaults: true, oneofs: true },
);
const pkg = grpc.loadPackageDefinition(definition).distributed_llm.v1;

let creds;
if (cfg.tls) {
  const read = (p) => (p ? readFileSync(p) : null);
  creds = grpc.credentials.createSsl(read(cfg.tls.ca), read(cfg.tls.key), read(cfg.tls.cert));
} else {
  creds = grpc.credentials.createInsecure();
}

const deadline = () => new Date(Date.now() + (cfg.deadlineMs ?? 5000));
const call = (client, method, req) =>
  new Promise((resolve, reject) =>
    client[method](req, { deadline: deadline() }, (err, res) => (err ? reject(err) : resolve(res)))
  );

const discovery = new pkg.DiscoveryService(cfg.target, creds);
const node = new pkg.NodeService(cfg.target, creds);
try {
  const clusterInfo = await call(discovery, "GetClusterInfo", { includeDeparted: false });
  const health = await call(node, "HealthCheck", {});
  console.log(JSON.stringify({ ok: true, clusterInfo, health }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, code: e.code, details: e.details ?? String(e) }));
} finally {
  discovery.close();
  node.close();
}
