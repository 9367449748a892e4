#!/usr/bin/env bash
# The test command of the README's Quick start (and of .ci/run): installs
# what is missing (as root), builds, runs the whole suite with ctest, then
# again in a sanitizer build.
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
