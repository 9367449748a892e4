#!/usr/bin/env bash
# The test command of the README's Quick start (and of .ci/run): installs
# what is missing (as root), builds, runs the whole suite with ctest, then
# again in a sanitizer build, then fuzzes each libFuzzer target for
# VBS_FUZZ_SECONDS (default 30; 0 skips it) seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
source cmake/deps.sh
vbs_require "${VBS_BUILD_DEPS[@]}" "${VBS_TEST_DEPS[@]}"
vbs_build build
ctest --test-dir build --output-on-failure
# the same suite under AddressSanitizer + UndefinedBehaviorSanitizer (leaks included)
cmake -S . -B build-asan -DVBS_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-asan -j"$(nproc)" >/dev/null
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-asan --output-on-failure
# every fuzz target for a while (tests/fuzz/run.sh: clang, libFuzzer, ASan/UBSan; 2 at a time)
if [ "${VBS_FUZZ_SECONDS:-30}" != 0 ]; then
  bash tests/fuzz/run.sh "${VBS_FUZZ_SECONDS:-30}"
fi
