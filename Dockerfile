# The agent as one static-ish binary (`deno task compile`) on a distroless base, non-root.
#   docker build -t ghcr.io/distributed-llm/agent:latest .
#   docker push ghcr.io/distributed-llm/agent:latest    # the image k8s/ runs (or your registry's)
#   docker run --rm -p 7950:7950 -p 7946:7946/udp -p 7946:7946 -p 9090:9090 \
#     ghcr.io/distributed-llm/agent:latest --bind 0.0.0.0 --insecure-bind-all
# k8s/ runs this image with a read-only root filesystem and the config in a ConfigMap.

FROM denoland/deno:2.9.6 AS build
WORKDIR /src
COPY . .
# WASM kernels first (the binary embeds build/kernels.wasm), then the binary itself.
RUN deno install --frozen \
 && deno run -A kernels/wasm/build.ts \
 && deno compile -A \
      --include models/stories260K.gguf \
      --include kernels/wasm/worker.ts \
      --include kernels/wasm/build/kernels.wasm \
      --include kernels/wasm/assembly \
      --output /out/distributed-llm-agent cli/agent.ts

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/distributed-llm-agent /usr/local/bin/distributed-llm-agent
USER 65532:65532
# rpc, gossip (UDP+TCP), metrics (/metrics, /health), OpenAI-compatible HTTP
EXPOSE 7950 7946/udp 7946/tcp 9090 8080
ENTRYPOINT ["/usr/local/bin/distributed-llm-agent"]
