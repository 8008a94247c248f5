#!/usr/bin/env bash
# Carry the device report to a GPU machine that reaches no package registry.
#
# bench/gpu_device.sh installs Deno from npm; a lent machine that can reach nothing outside it
# needs everything brought along instead. This packs, on a machine that has it all, into .device/
# (git-ignored):
#   deno.xz              this machine's Deno binary (the pinned version)
#   node_modules.tar.xz  the project's npm packages minus the heavy build- and test-only ones
#                        (binaryen, AssemblyScript's optimizer: the WASM kernels travel built;
#                        openai, kubernetes-models: test-only)
#   shared.tar.xz        ../shared/llamaref and the fixtures the report uses (see FIXTURES)
#   debs/                the Vulkan/EGL loaders (Debian packages; the GPU's driver is there)
# and unpacks them there, with a `node` stand-in (`deno run -A`) when Node.js is missing, since
# the goldens' checker and the model generator are Node scripts:
#
#   here:  bash bench/device_bundle.sh pack [FIXTURES]
#   there: bash bench/device_bundle.sh unpack && . .device/env.sh && bash bench/gpu_device.sh
#
# FIXTURES: "all" (default), "none", or a regular expression over fixture model names: only those
# models, their goldens and the small files travel ("!REGEX": all but those), so that a transfer
# limit can be met in two parts.
# The carried paths are .device and kernels/wasm/build (pack builds the kernels first).
# Settings (environment): DLLM_DEVICE_BUNDLE, another folder than .device (a second part, say;
# relative to the repository, or absolute when packing); DLLM_DEVICE_XZ, the xz level (default 6);
# DLLM_DEVICE_DEBS=0 to bring no loader packages (the target has libvulkan.so.1).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DLLM_DEVICE_BUNDLE:-.device}
XZ_LEVEL=${DLLM_DEVICE_XZ:-6}

# xz decompression with the xz tool, or Python's lzma where the tool is missing.
unxz_to() {
  if xz --version >/dev/null 2>&1; then xz -dc "$1" >"$2"; else
    python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$1" "$2"
  fi
}
untar_xz() {
  if xz --version >/dev/null 2>&1; then tar -xJf "$1" -C "$2"; else
    python3 -c 'import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"
  fi
}

pack() {
  local fixtures=${1:-all}
  local shared=${DLLM_SHARED:-../shared}
  # The kernels travel built (the compiler does not), stamped with their sources' digest.
  deno run -A kernels/wasm/build.ts
  [ -d node_modules/.deno ] || { echo "device bundle: no node_modules (run any deno task once)" >&2; exit 1; }
  rm -rf "$DIR" && mkdir -p "$DIR/debs"
  if [ "${DIR:0:1}" != / ] && [ -d .git ]; then
    mkdir -p .git/info
    grep -qx "/$DIR/" .git/info/exclude 2>/dev/null || echo "/$DIR/" >>.git/info/exclude
  fi
  echo "device bundle: deno $(deno --version | head -1 | cut -d' ' -f2)"
  xz -T0 "-$XZ_LEVEL" -c "$(readlink -f "$(command -v deno)")" >"$DIR/deno.xz"
  echo "device bundle: node_modules"
  # The heavy build- and test-only packages travel as placeholders (their folder, Deno's
  # .initialized marker and package.json), so Deno counts the tree as installed and does not try
  # to download them; nothing the report runs imports them. Deno's lock files stay behind: the
  # target makes its own, and `.deno.lock.poll` comes and goes while another deno process holds
  # the lock (tar failed on it when it vanished between the listing and the read).
  find node_modules | awk '
    /^node_modules\/\.deno\/\.deno\.lock/ { next }
    match($0, /^node_modules\/\.deno\/(binaryen@|openai@|kubernetes-models@|@kubernetes-models\+)[^\/]*/) {
      rel = substr($0, RLENGTH + 2)
      if (rel != "" && rel != ".initialized" && rel != "node_modules" &&
        rel !~ /^node_modules\/(@[^\/]+\/)?[^\/]+(\/package\.json)?$/) next
    }
    { print }' | tar --no-recursion -cf - -T - | xz -T0 "-$XZ_LEVEL" >"$DIR/node_modules.tar.xz"
  echo "device bundle: shared (fixtures: $fixtures)"
  local list=("llamaref/README.md" "llamaref/make-gguf.mjs" "llamaref/gguf-common.mjs"
    "llamaref/package.json")
  if [ "$fixtures" != none ]; then
    list+=(fixtures/README.md fixtures/check-golden.mjs fixtures/MANIFEST.json
      fixtures/MANIFEST-arch.json fixtures/spec.json fixtures/spec-arch.json)
    local f base
    for f in "$shared"/fixtures/models/*.gguf; do
      base=$(basename "$f" .gguf)
      if [ "$fixtures" = all ] || { [ "${fixtures:0:1}" = '!' ] && ! [[ "$base" =~ ${fixtures:1} ]]; } ||
        { [ "${fixtures:0:1}" != '!' ] && [[ "$base" =~ $fixtures ]]; }; then
        list+=("fixtures/models/$base.gguf")
        for g in "$shared"/fixtures/golden/"$base"__*; do list+=("fixtures/golden/$(basename "$g")"); done
      fi
    done
  fi
  tar -C "$shared" -cf - "${list[@]}" | xz -T0 "-$XZ_LEVEL" >"$DIR/shared.tar.xz"
  if [ "${DLLM_DEVICE_DEBS:-1}" != 0 ]; then
    echo "device bundle: Vulkan/EGL loaders"
    local o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/dllm-apt-lists)
    mkdir -p /tmp/dllm-apt-lists/partial
    if apt-get "${o[@]}" update >/dev/null 2>&1 &&
      (cd "$DIR/debs" && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libgles2 >/dev/null 2>&1); then :; else
      echo "device bundle: could not download the Vulkan loader packages; the target must have libvulkan.so.1" >&2
    fi
  fi
  du -ch "$DIR"/* kernels/wasm/build | sed 's/^/device bundle: /'
}

unpack() {
  [ -f "$DIR/deno.xz" ] || { echo "device bundle: no $DIR/deno.xz (pack it and carry $DIR)" >&2; exit 1; }
  mkdir -p "$DIR/bin" "$DIR/shared"
  unxz_to "$DIR/deno.xz" "$DIR/bin/deno" && chmod +x "$DIR/bin/deno"
  rm -rf node_modules && untar_xz "$DIR/node_modules.tar.xz" .
  untar_xz "$DIR/shared.tar.xz" "$DIR/shared"
  local deb
  for deb in "$DIR"/debs/*.deb; do [ -f "$deb" ] && dpkg -x "$deb" /; done
  command -v ldconfig >/dev/null && ldconfig
  if ! command -v node >/dev/null 2>&1; then
    printf '#!/bin/sh\nexec "%s/bin/deno" run -A "$@"\n' "$PWD/$DIR" >"$DIR/bin/node"
    chmod +x "$DIR/bin/node"
  fi
  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  {
    echo "export PATH=\"$PWD/$DIR/bin:\$PATH\""
    echo "export DLLM_SHARED=\"$PWD/$DIR/shared\""
    echo "export DENO_NO_UPDATE_CHECK=1"
    [ -f "$icd" ] && echo "export VK_DRIVER_FILES=$icd"
  } >"$DIR/env.sh"
  echo "device bundle: unpacked; deno $("$DIR/bin/deno" --version | head -1 | cut -d' ' -f2)," \
    "node $(command -v node >/dev/null 2>&1 && node --version || echo "stand-in (deno run -A)")"
}

case "${1:-}" in
pack) pack "${2:-all}" ;;
unpack) unpack ;;
*)
  echo "usage: bash bench/device_bundle.sh pack [all|none|MODEL-REGEX] | unpack" >&2
  exit 2
  ;;
esac
