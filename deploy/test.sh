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
./deploy/build.sh asan
echo "== tests under ASan/UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs"

echo "== fuzz targets (clang, libFuzzer + ASan/UBSan)"
./deploy/build.sh fuzz
ctest --test-dir build-fuzz -L fuzz --output-on-failure -j "$jobs"

echo "== release build"
./deploy/build.sh release
echo "== tests"
ctest --test-dir build --output-on-failure -j "$jobs"
