#!/usr/bin/env bash
# install.sh BUILD_DIR SOURCE_DIR: `cmake --install` into a scratch prefix,
# then build samples/uncertainty_summary.c against the installed library
# twice, with pkg-config and with find_package(vbseg), and run both.
set -eu
B=$1 S=$2
T=$(mktemp -d /tmp/vbs_install.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $*"; fi; }
cmake --install "$B" --prefix "$T/p" >/dev/null
ok test -x "$T/p/bin/vbseg"
ok test -f "$T/p/include/vbseg.h"
PC=$(find "$T/p" -name vbseg.pc | head -1)
ok test -n "$PC"
export PKG_CONFIG_PATH=$(dirname "$PC")
ok gcc -std=c11 -o "$T/a" "$S/samples/uncertainty_summary.c" $(pkg-config --cflags --libs vbseg) -Wl,-rpath,"$T/p/lib" -Wl,-rpath,"$(pkg-config --variable=libdir vbseg)"
mkdir -p "$T/cm"
cat >"$T/cm/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.18)
project(use_vbseg C)
find_package(vbseg REQUIRED)
add_executable(summary $S/samples/uncertainty_summary.c)
target_link_libraries(summary PRIVATE vbseg::vbseg)
CM
ok cmake -S "$T/cm" -B "$T/cm/b" -DCMAKE_PREFIX_PATH="$T/p" >/dev/null
ok cmake --build "$T/cm/b" >/dev/null
"$T/p/bin/vbseg" create --arch unet --latent 0 --dims 2 --in-channels 1 --classes 2 --base 2 --depth 1 --out "$T/m.vbseg" >/dev/null
"$B/samples/make_scan" "$T" S 16 16 4 >/dev/null
ok "$T/a" "$T/m.vbseg" 2 "$T/S_flair.nii.gz"
ok "$T/cm/b/summary" "$T/m.vbseg" 2 "$T/S_flair.nii.gz"
echo "install: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
