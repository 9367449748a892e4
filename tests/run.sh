#!/usr/bin/env bash
# The test command of the README's Quick start (and of .ci/run): installs
# what is missing (as root), builds, runs the whole suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
source cmake/deps.sh
vbs_require "${VBS_BUILD_DEPS[@]}" "${VBS_TEST_DEPS[@]}"
vbs_build build
ctest --test-dir build --output-on-failure
