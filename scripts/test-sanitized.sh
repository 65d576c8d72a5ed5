#!/usr/bin/env bash
# The sanitizer test runs (`make test-asan`, `make test-tsan`): configures and
# builds vmfactory with a sanitizer in a build dir of its own, runs the tests
# with every report fatal, and fails if any process wrote a report. Reports go
# to files (log_path), because the tests start sanitized processes whose
# stderr nobody reads: `vmfactory` (run, serve, init), and a
# `vmfactory-proxy` per VM. The guest agent is never sanitized (static, runs
# in the guest).
#
#   [BUILD_JOBS=N] scripts/test-sanitized.sh address|thread BUILD_DIR [JOBS] [CTEST_REGEX]
#
# address: AddressSanitizer + LeakSanitizer + UndefinedBehaviorSanitizer.
# thread:  ThreadSanitizer.
# JOBS: parallel tests (and build jobs unless BUILD_JOBS is set).
# CTEST_REGEX: only the tests whose names match (ctest -R); default all.
set -euo pipefail

mode=${1:?usage: $0 address|thread BUILD_DIR [JOBS] [CTEST_REGEX]}
build=${2:?usage: $0 address|thread BUILD_DIR [JOBS] [CTEST_REGEX]}
jobs=${3:-2}
regex=${4:-}
src=$(cd "$(dirname "$0")/.." && pwd)

case "$mode" in
  address | thread) ;;
  *)
    echo "test-sanitized: mode must be address or thread, not '$mode'" >&2
    exit 2
    ;;
esac

start=$(date +%s)
cmake -S "$src" -B "$build" -DVMF_SANITIZE="$mode"
cmake --build "$build" -j"${BUILD_JOBS:-$jobs}"

logs=$(cd "$build" && pwd)/sanitizer-logs
rm -rf "$logs"
mkdir -p "$logs"
case "$mode" in
  address)
    export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:print_stacktrace=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:log_path=$logs/asan"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan"
    # Genuine third-party false positives only, each explained in the file.
    if [ -f "$src/scripts/lsan.supp" ]; then
      export LSAN_OPTIONS="suppressions=$src/scripts/lsan.supp:print_suppressions=0"
    fi
    ;;
  thread)
    export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$logs/tsan"
    ;;
esac
# A template of their own: the shared one is made from another build's guest
# image, and replacing it would disturb a `make test` running next to us.
export VMF_IT_TEMPLATE=/tmp/vmf-it-template-$mode

set +e
(cd "$build" && ctest -j"$jobs" --output-on-failure --timeout 900 ${regex:+-R "$regex"})
rc=$?
set -e

shopt -s nullglob
reports=("$logs"/*)
if [ ${#reports[@]} -gt 0 ]; then
  for r in "${reports[@]}"; do
    echo "===== sanitizer report $r"
    cat "$r"
  done
  echo "test-sanitized ($mode): ${#reports[@]} sanitizer report(s), in $logs" >&2
  [ "$rc" -eq 0 ] && rc=1
fi
echo "test-sanitized ($mode): exit $rc after $(($(date +%s) - start)) s"
exit "$rc"
