#!/usr/bin/env bash
# deploy/build.sh VARIANT: configures and builds one of lorad's build trees, the way
# deploy/test.sh and deploy/fuzz.sh use them (the packages must be installed first,
# deploy/install-deps.sh):
#   release  build/       RelWithDebInfo, warnings as errors
#   asan     build-asan/  Debug with AddressSanitizer + UndefinedBehaviorSanitizer
#   fuzz     build-fuzz/  clang, the libFuzzer targets of tests/fuzz with ASan/UBSan
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc 2>/dev/null || echo 2)
case "${1:-}" in
  release)
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLORAD_WERROR=ON >/dev/null
    cmake --build build -j "$jobs" ;;
  asan)
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLORAD_SANITIZE=ON -DLORAD_WERROR=ON >/dev/null
    cmake --build build-asan -j "$jobs" ;;
  fuzz)
    CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DLORAD_FUZZ=ON -DLORAD_SANITIZE=ON \
      -DLORAD_WERROR=OFF >/dev/null
    cmake --build build-fuzz --target fuzz -j "$jobs" ;;
  *)
    echo "usage: deploy/build.sh release|asan|fuzz" >&2
    exit 2 ;;
esac
