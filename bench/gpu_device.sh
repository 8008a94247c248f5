#!/usr/bin/env bash
# The device report: one command for a lent GPU machine (16 cores, one GPU). Installs Deno from
# npm when it is missing (on a machine that reaches no registry, bench/device_bundle.sh brings
# Deno, the npm packages, the fixtures and the Vulkan loader instead), then prints, in order:
#   1. the adapter (description, features, WGSL features, limits) and its optional shader
#      paths: shader-f16 / subgroups granted, and whether the startup self-check enabled them
#                                                                      bench/gpu.ts --adapter-info
#   1b. how long the host waits for the GPU: Deno's ~10 ms per awaited GPU promise next to a small
#      pass's own time                                                 bench/gpu.ts --wait-probe
#   2. the public llama.cpp goldens and the GPU sampling parity tests on --backend webgpu (with
#      the paths the self-check enabled), the goldens again with them forced off
#      (DLLM_WEBGPU_FEATURES=none; only where a feature is granted), and the feature tests
#   3. bench gpu on each model (WebGPU vs WASM in the same run, decode/prefill tok/s, reads,
#      submissions and bytes read back per token), then the first model once more the old way
#      (--legacy-read: the whole logit row back per step; --tiled-prefill off) for the comparison
# and a summary line per step with its wall time. Exits non-zero when a step fails. Sized for
# under 8 minutes on a GPU; tests/kernels/webgpu/device_script_test.ts runs it on llvmpipe with
# the small settings below so every step is proven before a GPU is lent.
#
# Settings (environment):
#   DLLM_SHARED              the fixtures folder's parent (default ../shared beside the repo)
#   DLLM_DEVICE_GENERATE     generated models for bench gpu (default q8_0,1b_q8_0; "" for none)
#   DLLM_DEVICE_MODELS       GGUF files for bench gpu, comma-separated (default none)
#   DLLM_DEVICE_PP / _TG / _REPS / _DIM   prompt tokens, decode tokens, rounds, matvec size
#   DLLM_DEVICE_GOLDEN_FILTER  only goldens whose test name contains this (default all)
#   DLLM_DEVICE_OUT          folder for the logs and JSON (default bench/out/device)
set -uo pipefail
cd "$(dirname "$0")/.."

DENO_VERSION=2.9.6
GENERATE=${DLLM_DEVICE_GENERATE-q8_0,1b_q8_0}
MODELS=${DLLM_DEVICE_MODELS-}
PP=${DLLM_DEVICE_PP:-128}
TG=${DLLM_DEVICE_TG:-64}
REPS=${DLLM_DEVICE_REPS:-3}
DIM=${DLLM_DEVICE_DIM:-4096}
FILTER=${DLLM_DEVICE_GOLDEN_FILTER-}
OUT=${DLLM_DEVICE_OUT:-bench/out/device}
mkdir -p "$OUT"

if command -v deno >/dev/null 2>&1 && deno --version 2>/dev/null | grep -q "deno ${DENO_VERSION} "; then
  DENO=(deno)
else
  echo "== installing deno ${DENO_VERSION} from npm"
  if npm i -g "deno@${DENO_VERSION}" >/dev/null 2>&1; then DENO=(deno); else DENO=(npx -y "deno@${DENO_VERSION}"); fi
fi
"${DENO[@]}" --version | head -1

failed=0
summary=()
# step NAME LOGFILE COMMAND…: run one step, tee its output, record its time and status.
step() {
  local name=$1 log=$2
  shift 2
  echo "== ${name}"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$OUT/$log"
  local rc=${PIPESTATUS[0]}
  local line="device report: ${name}: $([ "$rc" = 0 ] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - t0)) s"
  summary+=("$line")
  [ "$rc" = 0 ] || failed=1
}

step "adapter" adapter.log "${DENO[@]}" run --allow-all bench/gpu.ts --adapter-info
features=$(grep -a "^webgpu shader features:" "$OUT/adapter.log" | tail -1)
step "wait probe" wait.log "${DENO[@]}" run --allow-all bench/gpu.ts --wait-probe

# Each test file in its own process. Deno 2.9.6's WebGPU sometimes aborts a process at exit
# ("double free or corruption", SIGABRT) after every test in it has passed and its devices were
# destroyed; such a file counts as passed — its tests' verdicts are in — and the report says so
# on its own line, so the crash is never hidden.
golden_files() {
  local rc=0 f code log
  for f in golden_test.ts sampling_test.ts golden_fallback_test.ts features_test.ts; do
    log="$OUT/goldens-${f%.ts}.log"
    "${DENO[@]}" test --allow-all "tests/kernels/webgpu/$f" ${FILTER:+--filter "$FILTER"} >"$log" 2>&1
    code=$?
    cat "$log"
    if [ "$code" = 134 ] && grep -aq "| 0 failed" "$log" && ! grep -aq "FAILED" "$log"; then
      echo "device report: NOTE: every test of $f passed; Deno aborted the process at exit" >>"$OUT/teardown.txt"
    elif [ "$code" != 0 ]; then
      rc=1
    fi
  done
  return "$rc"
}
step "goldens and sampling parity on webgpu" goldens.log golden_files

bench_args=(--pp "$PP" --tg "$TG" --reps "$REPS" --dim "$DIM")
models=()
[ -n "$GENERATE" ] && models+=(--generate "$GENERATE")
IFS=',' read -r -a files <<<"$MODELS"
for f in "${files[@]}"; do [ -n "$f" ] && models+=(--model "$f"); done
step "bench gpu" bench.log "${DENO[@]}" task bench gpu "${models[@]}" "${bench_args[@]}"
# The old paths on the first model only: every logit back per step, prompts untiled.
first=("${models[@]:0:2}")
if [ "${first[0]:-}" = "--generate" ]; then first=(--generate "${GENERATE%%,*}"); fi
[ "${#first[@]}" -gt 0 ] && step "bench gpu --legacy-read" bench_legacy.log \
  "${DENO[@]}" task bench gpu "${first[@]}" "${bench_args[@]}" --no-wasm --legacy-read --tiled-prefill off

printf '%s\n' "${summary[@]}"
[ -f "$OUT/teardown.txt" ] && cat "$OUT/teardown.txt"
echo "device report: ${features:-webgpu shader features: unknown (the adapter step failed)}"
echo "device report: logs in $OUT"
exit "$failed"
