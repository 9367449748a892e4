#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS] [--runs N] [--jobs J] [TARGET...]
#
# Builds every fuzz target of tests/fuzz/ with clang and libFuzzer under
# ASan and UBSan (-fsanitize=fuzzer,address,undefined,float-cast-overflow
# -fno-sanitize-recover=all) in build-fuzz/, then runs each for SECONDS
# (default $VBS_FUZZ_SECONDS or 30), or for N executions with --runs N (the
# long campaign: --runs 10000000), J targets at a time (default 2), each
# from its committed seed corpus and regression inputs with its dictionary.
# New inputs go to build-fuzz/corpus/TARGET/ (never to the committed
# corpus), findings to build-fuzz/findings/TARGET/, logs to
# build-fuzz/logs/TARGET.log. Prints per target the executions, the
# coverage (libFuzzer's final cov and ft) and the findings, and exits
# non-zero on any crash, leak, timeout (25 s per input) or OOM (2.5 GB
# RSS), as OSS-Fuzz counts them.
#
# The allocation cap (tests/fuzz/fuzz.h, README.md): while the library runs,
# one allocation request by vbseg's code larger than 8 x the input's bytes
# (for .nii.gz, the bytes it inflates to) + 16 MiB (+ 4 bytes per float a
# model's planned forward pass takes, at most 8 Mi floats) aborts: an
# allocation sized from the file before it is checked is a finding.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECS=${VBS_FUZZ_SECONDS:-30} RUNS= JOBS=2 TARGETS=()
ALL=(vbseg nifti npy onnx card dataset checkpoint pytorch safetensors twin)
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=${2:?--runs needs a count}; shift 2 ;;
    --jobs) JOBS=${2:?--jobs needs a count}; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    [0-9]*) SECS=$1; shift ;;
    *) [[ " ${ALL[*]} " == *" $1 "* ]] || { echo "run.sh: unknown target '$1' (targets: ${ALL[*]})" >&2; exit 2; }
       TARGETS+=("$1"); shift ;;
  esac
done
[[ $SECS =~ ^[0-9]+$ && $JOBS =~ ^[1-9][0-9]*$ && ( -z $RUNS || $RUNS =~ ^[0-9]+$ ) ]] || {
  echo "run.sh: SECONDS, --runs and --jobs take whole numbers" >&2; exit 2; }
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")
command -v clang >/dev/null || { echo "run.sh: clang not found (Debian: apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }

BF=$ROOT/build-fuzz
FZ=$ROOT/tests/fuzz
t0=$(date +%s)
SAN="-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer"
mkdir -p "$BF"
if ! { CC=clang cmake -S "$ROOT" -B "$BF" -DVBS_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION $SAN" -DCMAKE_EXE_LINKER_FLAGS="$SAN" &&
       cmake --build "$BF" -j"$JOBS" --target "${TARGETS[@]/#/fuzz_}"; } >"$BF/build.log" 2>&1; then
  tail -30 "$BF/build.log"; echo "run.sh: the fuzz build failed (log: $BF/build.log)" >&2; exit 1
fi
t1=$(date +%s)
echo "built ${#TARGETS[@]} targets in $((t1 - t0)) s (build-fuzz/)"

# one target: its scratch corpus first (libFuzzer writes new inputs to the first folder), then the committed seeds
fuzz_one() {
  local t=$1 seeds=("$FZ/corpus/$t")
  [ -d "$FZ/regressions/$t" ] && seeds+=("$FZ/regressions/$t")
  mkdir -p "$BF/corpus/$t" "$BF/findings/$t" "$SCRATCH/$t"
  local limit=(-max_total_time="$SECS")
  [ -n "$RUNS" ] && limit=(-runs="$RUNS")
  TMPDIR=$SCRATCH/$t UBSAN_OPTIONS=print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
    "$BF/tests/fuzz/fuzz_$t" "${limit[@]}" -rss_limit_mb=2560 -timeout=25 -dict="$FZ/dict/$t.dict" \
    -artifact_prefix="$BF/findings/$t/" -print_final_stats=1 -close_fd_mask=1 \
    "$BF/corpus/$t" "${seeds[@]}" >"$BF/logs/$t.log" 2>&1
  echo $? >"$BF/logs/$t.rc"
}
mkdir -p "$BF/logs"
rm -f "$BF"/logs/*.rc
# the targets' scratch files (each input is written to one) in RAM where there is a tmpfs: 18x the
# executions of a disk folder for the .npy target
SCRATCH=$(mktemp -d /dev/shm/vbseg-fuzz.XXXXXX 2>/dev/null || mktemp -d "$BF/scratch.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
running=0
for t in "${TARGETS[@]}"; do
  rm -f "$BF/findings/$t"/* 2>/dev/null
  fuzz_one "$t" &
  running=$((running + 1))
  if [ $running -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait
t2=$(date +%s)

bad=0
printf '%-11s %12s %8s %8s  %s\n' target executions cov ft findings
for t in "${TARGETS[@]}"; do
  log=$BF/logs/$t.log rc=$(cat "$BF/logs/$t.rc" 2>/dev/null || echo 1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  found=$(cd "$BF/findings/$t" && ls 2>/dev/null | tr '\n' ' ')
  what=${found:-none}
  if [ "$rc" != 0 ] || [ -n "$found" ]; then
    bad=1
    what="${found:-exit status $rc, no input saved} ($(grep -m1 -oE 'ERROR: [A-Za-z]+: [^ ]+( [^ ]+)?|runtime error: .*|vbseg fuzz: .*|deadly signal' "$log" || echo "see $log"))"
  fi
  printf '%-11s %12s %8s %8s  %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$what"
done
echo "fuzzing took $((t2 - t1)) s ($JOBS at a time; build $((t1 - t0)) s); logs in build-fuzz/logs/"
if [ $bad != 0 ]; then
  echo "run.sh: findings above: reproduce one with build-fuzz/tests/fuzz/fuzz_TARGET FILE, then fix it at its cause" \
       "and keep the input in tests/fuzz/regressions/TARGET/" >&2
  exit 1
fi
