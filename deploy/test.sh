#!/usr/bin/env bash
# The README's test command: installs what the tests need, builds lorad twice (a
# normal build, and one with AddressSanitizer + UndefinedBehaviorSanitizer), and runs
# the whole ctest suite on both. The sanitizer run comes first, then a short run of
# each libFuzzer target (tests/fuzz, a clang build in build-fuzz); the last line printed
# is the summary of the normal run. Exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

./deploy/install-deps.sh

jobs=$(nproc 2>/dev/null || echo 2)

echo "== build with AddressSanitizer and UndefinedBehaviorSanitizer"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLORAD_SANITIZE=ON -DLORAD_WERROR=ON >/dev/null
cmake --build build-asan -j "$jobs"
echo "== tests under ASan/UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs"

echo "== fuzz targets (clang, libFuzzer + ASan/UBSan)"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DLORAD_FUZZ=ON -DLORAD_SANITIZE=ON \
  -DLORAD_WERROR=OFF >/dev/null
cmake --build build-fuzz --target fuzz -j "$jobs"
ctest --test-dir build-fuzz -L fuzz --output-on-failure -j "$jobs"

echo "== release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLORAD_WERROR=ON >/dev/null
cmake --build build -j "$jobs"
echo "== tests"
ctest --test-dir build --output-on-failure -j "$jobs"
