# deps.sh: sourced by samples/demo.sh and tests/run.sh. Checks the Debian 12
# packages vbseg needs; as root installs the missing ones with apt-get,
# otherwise prints the exact apt-get line and exits non-zero.
#   vbs_require PKG...
vbs_require() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
      echo "apt-get install failed for: ${missing[*]}" >&2; exit 1; }
  else
    echo "vbseg needs these Debian packages; install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
}

VBS_BUILD_DEPS=(cmake gcc make pkg-config protobuf-c-compiler libprotobuf-c-dev libopenblas-dev libnifti2-dev
                libniftiio-dev libstb-dev zlib1g-dev libonnx-dev libjansson-dev)
# clang and libclang-rt-14-dev: the libFuzzer targets (tests/fuzz/run.sh); libfiu: the fault walks (tests/fault/)
VBS_TEST_DEPS=(python3-torch python3-numpy python3-nibabel libonnx-testdata gnuplot-nox clang libclang-rt-14-dev libfiu-dev fiu-utils)
# npm: tests/export.sh installs onnxruntime-node with it (the export's oracle). Debian's package only where no
# npm is on PATH: NodeSource's nodejs carries its own npm and conflicts with Debian's.
command -v npm >/dev/null 2>&1 || VBS_TEST_DEPS+=(npm)
# samples/paper/reproduce.sh's plots
VBS_PAPER_DEPS=(gnuplot-nox)

# vbs_build BUILD_DIR: configure and build in Release mode.
vbs_build() {
  cmake -S . -B "$1" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$1" -j"$(nproc)" >/dev/null
}
