#!/usr/bin/env bash
# Build llama.cpp's own llama-server and llama-bench from the llama.cpp source vendored in the
# llama-cpp-python sdist mistralkit installs (same llama.cpp, same CPU flags), for the reference
# columns of bench/serve_throughput.py. Cached: a second run prints the folder and exits.
# About 11 minutes on 2 cores. Not part of `make test`.
#
#   bash bench/build_llama_server.sh            # prints the folder holding bin/llama-server
#   LLAMA_CPP_BENCH_DIR=/some/dir bash bench/build_llama_server.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
version="$("$python" -c 'import llama_cpp; print(llama_cpp.__version__)')"
out="${LLAMA_CPP_BENCH_DIR:-$HOME/.cache/mistralkit/llama.cpp-$version}"
if [ -x "$out/bin/llama-server" ] && [ -x "$out/bin/llama-bench" ]; then
  echo "$out"; exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work" >&2
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build "$work/build" --target llama-server llama-bench -j "$(nproc)" >&2
mkdir -p "$out/bin"
cp "$work/build/bin/llama-server" "$work/build/bin/llama-bench" "$out/bin/"
echo "$out"
