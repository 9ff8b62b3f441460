#!/usr/bin/env bash
# The database tests of the threaded loader under ThreadSanitizer: builds a second tree with
# -DEPC_SANITIZE=thread (Debug with -O1), there only the target load_tests (tests/db/test_load.cpp
# with the library and the fixture generator), and runs it. A data race, a lock-order inversion or
# a use-after-free stops the run (halt_on_error=1) and fails it.
# ctest runs this as the test `tsan.load` (label db), so `bin/test` and `bin/test db` include it
# and `bin/test unit` does not. Known false positives of uninstrumented system libraries are
# suppressed in tests/tsan.supp (never our own code).
#
# Usage: tests/tsan.sh TSAN_BUILD_DIR
# Needs the PG* variables of a PostgreSQL server, like every db test (bin/with-postgres).
# Env: EPC_TSAN_FILTER  gtest filter of the tests to run (default: all of them, i.e. '*')
#      TSAN_OPTIONS     appended to this script's (halt_on_error=1 second_deadlock_stack=1 and
#                       the suppressions file), so they can override them
set -euo pipefail

if [ $# -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  [ $# -eq 1 ] && exit 0
  exit 2
fi
build_dir=$1
source_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
filter=${EPC_TSAN_FILTER:-*}

# Configure only when there is no generated build system yet (as bin/build does); after that the
# build re-runs the configure step itself whenever a CMakeLists.txt changes.
if [ ! -f "$build_dir/CMakeCache.txt" ] || [ ! -f "$build_dir/Makefile" ]; then
  cmake -S "$source_dir" -B "$build_dir" -DCMAKE_BUILD_TYPE=Debug -DEPC_SANITIZE=thread --log-level=WARNING
fi
start=$SECONDS
cmake --build "$build_dir" --parallel "$(nproc)" --target load_tests
echo "tsan: build took $((SECONDS - start)) s"

# The tests write their fixtures under fixed names into testing::TempDir(): a directory of its
# own keeps them away from the same tests running uninstrumented beside this one.
tmp=$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/tsan.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

start=$SECONDS
rc=0
TEST_TMPDIR=$tmp \
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$source_dir/tests/tsan.supp ${TSAN_OPTIONS:-}" \
  "$build_dir/tests/load_tests" --gtest_filter="$filter" || rc=$?
if [ "$rc" -eq 0 ]; then
  echo "tsan: PASSED ($filter, $((SECONDS - start)) s)"
else
  echo "tsan: FAILED with exit code $rc ($filter; 66 is ThreadSanitizer's report, see above)" >&2
fi
exit "$rc"
