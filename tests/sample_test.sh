#!/usr/bin/env bash
# The README's first command, bin/sample, does what it says: downloads the generated archive from
# the local EPC stand-in, loads, geocodes with the local postcodes.io stand-in and publishes into
# a throw-away PostgreSQL, and prints the production rows with coordinates. Checks its exit code,
# the generator's verdict, the production row count against the generator's expectation, and
# that certificates were located at postcode precision.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
out=$(mktemp -t epc-sample-test.XXXXXX)
trap 'rm -f "$out"' EXIT
fail() {
  echo "FAIL: $*" >&2
  tail -n 60 "$out" >&2
  exit 1
}

# No database of the caller's: the sample makes its own throw-away cluster.
env -u PGHOST -u PGHOSTADDR -u PGPORT -u PGDATABASE -u PGUSER -u PGSERVICE -u DATABASE_URL \
  bin/sample >"$out" 2>&1 || fail "bin/sample exited with $?"
grep -q "rejected: as expected" "$out" || fail "the generator's expectations were not met"
loaded=$(sed -n 's/.*The generator expects [0-9]* rows read, \([0-9]*\) loaded.*/\1/p' "$out")
published=$(sed -n 's/^Rows in the production table epc.domestic_certificates: \([0-9]*\)$/\1/p' "$out")
if [ -z "$loaded" ] || [ "$published" != "$loaded" ]; then
  fail "production holds '$published' rows, expected '$loaded'"
fi
recommendations=$(sed -n 's/^Recommendations in epc.domestic_recommendations: \([0-9]*\) (the generator expects \([0-9]*\) loaded)$/\1 \2/p' "$out")
read -r recs_published recs_expected <<<"${recommendations:-x y}"
if [ "$recs_published" != "$recs_expected" ] || [ "$recs_published" = 0 ]; then
  fail "epc.domestic_recommendations holds '$recs_published' rows, expected '$recs_expected'"
fi
located=$(sed -n 's/^ *postcode *| *\([0-9]*\) *|.*/\1/p' "$out")
if [ -z "$located" ] || [ "$located" -eq 0 ]; then fail "no certificate located at postcode precision"; fi
grep -Eq '^ *[0-9]+ +\| [0-9-]+ +\|.*\| +[0-9]+\.[0-9]+ \| +-?[0-9]+\.[0-9]+ \| postcode' "$out" ||
  fail "no example row with coordinates"
echo "bin/sample: $published certificates published, $located located at postcode precision," \
  "$recs_published recommendations"
