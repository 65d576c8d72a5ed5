#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets with clang (ASan + UBSan) in a
# build dir of its own and runs each for a set time, one after the other.
#
#   fuzz/run.sh [BUILD_DIR (build-fuzz)] [SECONDS per target (300)] [TARGET...]
#
# Each target works on a scratch copy of its committed corpus
# (BUILD_DIR/fuzz-work/TARGET), so fuzz/corpus is never touched; crashes,
# timeouts and leaks go to BUILD_DIR/artifacts/TARGET/ and the log to
# BUILD_DIR/artifacts/TARGET/fuzz.log. Fails if any target found something.
# To keep a finding as a regression input, copy it into fuzz/corpus/TARGET/.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build-fuzz}
seconds=${2:-300}
shift $(($# < 2 ? $# : 2))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ttrpc_frame qmp config daemon_request agent_request proxy_session)
jobs=${JOBS:-1}
rss_mb=${FUZZ_RSS_MB:-2048}

if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  echo "fuzz: needs clang with libFuzzer (Debian: apt-get install clang libclang-rt-14-dev)" >&2
  exit 2
fi

cd "$src"
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang -DVMF_FUZZ=ON \
  -DVMF_BUILD_GUEST=OFF -DVMF_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$jobs" --target $(printf 'fuzz_%s ' "${targets[@]}")

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
summary=()
for t in "${targets[@]}"; do
  work="$build/fuzz-work/$t"
  art="$build/artifacts/$t"
  rm -rf "$work" "$art"  # findings of an earlier run must not be taken for this one's
  mkdir -p "$work" "$art"
  cp "fuzz/corpus/$t"/* "$work"/
  echo "fuzz: $t for ${seconds}s (log: $art/fuzz.log)"
  rc=0
  "$build/bin/fuzz_$t" -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$art/" "$work" >"$art/fuzz.log" 2>&1 || rc=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$art/fuzz.log" | tail -1 || true)
  [ -n "$done_line" ] || done_line=$(grep -E '^#[0-9]+[[:space:]]' "$art/fuzz.log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$art/fuzz.log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$art/fuzz.log")
  line="$t: rc=$rc execs=${execs:-?} exec/s=${rate:-?} | $done_line"
  summary+=("$line")
  if [ "$rc" != 0 ]; then
    failed+=("$t")
    echo "fuzz: $t FAILED; artifacts in $art:" >&2
    ls "$art" >&2
    grep -m5 -E 'ERROR|SUMMARY|fuzz invariant' "$art/fuzz.log" >&2 || true
  fi
done

echo
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failures in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: no crash, hang or leak in ${#targets[@]} targets"
