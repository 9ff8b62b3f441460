#!/usr/bin/env bash
# The container image's build, without a Docker engine: runs the steps docker/Dockerfile runs
# (bin/install-deps --build, bin/build-release, bin/build-release --test-tools) on this host,
# then checks that what they install would run in the runtime stage:
#   - every shared library ldd finds for epc-import belongs to a package of
#     `bin/install-deps --runtime` or one of their dependencies, or to the C/C++ runtime
#     debian:bookworm-slim has (for the stand-ins image's tools: --runtime --stand-ins); none is
#     "not found"
#   - the installed epc-import answers --version and --help
# and that the files say what they should:
#   - docker/Dockerfile runs those scripts, has a bookworm build stage and a bookworm-slim
#     runtime stage that is the last (default) one, runs as a non-root USER, and has
#     ENTRYPOINT ["epc-import"]
#   - .dockerignore keeps nothing out that the Dockerfile COPYs
#   - docker/compose.yaml: PostgreSQL 15 with a healthcheck and a named volume, the importer
#     built from a Dockerfile target and waiting for a healthy PostgreSQL, the offline trial
# The build directory build-image/ (ignored by git) is kept between runs, so only the first
# run compiles everything (~2-3 minutes on 2 cores); a lock keeps two runs apart.
# Env: BUILD_JOBS (default: number of cores).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
scratch=$(mktemp -d -t epc-test-image-steps.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
ok() { echo "ok: $*"; }

# --- 1. The Dockerfile's steps, on the host ---
bin/install-deps --build
mkdir -p build-image
exec 9>build-image/.lock
flock 9
BUILD_DIR=build-image bin/build-release "$scratch/epc-import" >"$scratch/build.log" 2>&1 || {
  cat "$scratch/build.log" >&2
  echo "FAIL: bin/build-release" >&2
  exit 1
}
BUILD_DIR=build-image bin/build-release --test-tools "$scratch/epc-tools" >"$scratch/tools.log" 2>&1 || {
  cat "$scratch/tools.log" >&2
  echo "FAIL: bin/build-release --test-tools" >&2
  exit 1
}
flock -u 9
binary=$scratch/epc-import/bin/epc-import
for f in "$binary" "$scratch/epc-tools/bin/epc-stand-ins" "$scratch/epc-tools/bin/epc-fixture"; do
  [ -x "$f" ] || fail "bin/build-release installed no ${f#"$scratch"/}"
done
[ "$failures" -eq 0 ] || exit 1
ok "bin/build-release installed epc-import, epc-stand-ins, epc-fixture"

# --- 2. The runtime stage's packages cover every shared library ---
# available MODE... : the packages `bin/install-deps --list MODE...` names, the ones they depend
# on, recursively, and the C and C++ runtime every debian:bookworm-slim has; one a line.
available() {
  local pkgs
  mapfile -t pkgs < <(bin/install-deps --list "$@")
  [ ${#pkgs[@]} -gt 0 ] || fail "bin/install-deps --list $* lists nothing"
  if ! apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "${pkgs[@]}" >"$scratch/closure.txt" 2>"$scratch/closure.err"; then
    fail "apt-cache depends on the packages of --list $* failed (a name wrong?): $(cat "$scratch/closure.err")"
  fi
  {
    grep -v '^ ' "$scratch/closure.txt" | grep -v '^<' || true
    printf '%s\n' libc6 libgcc-s1 libstdc++6 zlib1g
  } | sort -u
}
available --runtime >"$scratch/runtime.txt"
available --runtime --stand-ins >"$scratch/stand-ins.txt"

# owner FILE: the package that ships FILE (merged /usr: ldd may name /lib/..., dpkg /usr/lib/...).
owner() {
  local f=$1 candidates=("$1") real
  real=$(readlink -f "$f")
  candidates+=("$real")
  for c in "$f" "$real"; do
    case $c in
      /usr/*) candidates+=("${c#/usr}") ;;
      *) candidates+=("/usr$c") ;;
    esac
  done
  local c out
  for c in "${candidates[@]}"; do
    if out=$(dpkg -S "$c" 2>/dev/null); then
      # "libzip4:amd64: /usr/lib/..." -> libzip4
      printf '%s\n' "${out%%: *}" | head -n 1 | sed 's/:[a-z0-9]*$//'
      return 0
    fi
  done
  return 1
}

# check_libraries EXE AVAILABLE_LIST MODES
check_libraries() {
  local exe=$1 name=${1##*/} list=$2 modes=$3 line lib path pkg count=0
  local ldd_out
  ldd_out=$(ldd "$exe") || { fail "ldd $name failed"; return; }
  while IFS= read -r line; do
    case $line in
      *"not found"*) fail "$name: $line"; continue ;;
      *" => "/*) ;;
      *) continue ;; # linux-vdso, the dynamic loader (libc6)
    esac
    lib=${line%% =>*}
    lib=${lib//[[:space:]]/}
    path=${line#*=> }
    path=${path%% (*}
    if ! pkg=$(owner "$path"); then
      fail "$name: $lib ($path) belongs to no Debian package"
      continue
    fi
    if ! grep -qxF "$pkg" "$list"; then
      fail "$name: $lib comes from $pkg, which bin/install-deps $modes does not install (add it there)"
      continue
    fi
    count=$((count + 1))
  done <<<"$ldd_out"
  ok "$name: $count shared libraries, all from the packages of install-deps $modes or bookworm-slim"
}
check_libraries "$binary" "$scratch/runtime.txt" --runtime
check_libraries "$scratch/epc-tools/bin/epc-stand-ins" "$scratch/stand-ins.txt" "--runtime --stand-ins"
check_libraries "$scratch/epc-tools/bin/epc-fixture" "$scratch/stand-ins.txt" "--runtime --stand-ins"

# --- 3. The installed binary runs ---
if version=$("$binary" --version 2>&1) && [[ $version == "epc-import "[0-9]* ]]; then
  ok "epc-import --version: $version"
else
  fail "epc-import --version: '$version'"
fi
if help=$("$binary" --help 2>&1) && grep -q -- '--certtype' <<<"$help"; then
  ok "epc-import --help"
else
  fail "epc-import --help did not print the options: $help"
fi
if "$scratch/epc-tools/bin/epc-fixture" --help >/dev/null 2>&1 &&
  "$scratch/epc-tools/bin/epc-stand-ins" --help >/dev/null 2>&1; then
  ok "epc-fixture --help, epc-stand-ins --help"
else
  fail "epc-fixture or epc-stand-ins does not answer --help"
fi

# --- 4. The Dockerfile ---
df=docker/Dockerfile
# Instructions only: comments dropped, continuation lines joined.
sed -e '/^[[:space:]]*#/d' "$df" | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' >"$scratch/df.txt"
expect() { # expect WHAT EXTENDED_REGEX
  if grep -qE -- "$2" "$scratch/df.txt"; then ok "Dockerfile: $1"; else fail "Dockerfile: $1 (no line matches $2)"; fi
}
expect "build stage on debian:bookworm" '^FROM debian:bookworm AS build$'
expect "runtime packages on debian:bookworm-slim" '^FROM debian:bookworm-slim AS '
expect "build stage runs bin/install-deps --build" '^RUN .*install-deps --build( |$)'
expect "runtime stage runs install-deps --runtime" '^RUN .*install-deps --runtime( |$)'
expect "stand-ins stage runs install-deps --stand-ins" '^RUN .*install-deps --stand-ins( |$)'
expect "builds with bin/build-release" '^RUN .*bin/build-release /'
expect "builds the test tools with bin/build-release --test-tools" '^RUN .*bin/build-release --test-tools /'
expect "a fixed uid 10001" 'useradd .*--uid 10001'
# The last stage is what `docker build` gives without --target: the runtime image.
awk '/^FROM /{stage=""} {stage=stage $0 "\n"} END{printf "%s", stage}' "$scratch/df.txt" >"$scratch/last.txt"
if grep -qE '^FROM [^ ]+ AS runtime$' "$scratch/last.txt"; then ok "Dockerfile: the last stage is runtime"; else fail "Dockerfile: the last stage is not 'runtime'"; fi
last_user=$(sed -n 's/^USER[[:space:]]\{1,\}//p' "$scratch/last.txt" | tail -n 1)
case ${last_user%%:*} in
  "") fail "Dockerfile: the runtime stage sets no USER (it would run as root)" ;;
  root | 0) fail "Dockerfile: the runtime stage runs as $last_user" ;;
  *) ok "Dockerfile: runs as USER $last_user" ;;
esac
entrypoint=$(grep -E '^ENTRYPOINT' "$scratch/last.txt" | tail -n 1)
if [ "$entrypoint" = 'ENTRYPOINT ["epc-import"]' ]; then ok "Dockerfile: $entrypoint"; else fail "Dockerfile: the runtime ENTRYPOINT is '$entrypoint', not [\"epc-import\"]"; fi
grep -qE '^COPY --from=build /opt/epc-import/bin/epc-import ' "$scratch/last.txt" ||
  fail "Dockerfile: the runtime stage does not copy the installed epc-import from the build stage"

# --- 5. .dockerignore leaves in what the Dockerfile copies ---
sed -n 's/^COPY[[:space:]]\{1,\}\([^-][^ ]*\) .*/\1/p' "$scratch/df.txt" | sort -u >"$scratch/sources.txt"
[ -s "$scratch/sources.txt" ] || fail "Dockerfile: no COPY from the build context found"
while IFS= read -r src; do
  top=${src%%/*}
  if grep -qxE "(/)?(${top//./\\.}|${src%/}|${src%/}/)" .dockerignore; then
    fail ".dockerignore excludes $src, which the Dockerfile copies"
  fi
done <"$scratch/sources.txt"
for must in .git build 'build-\*' epc-work; do
  grep -qxE "/?$must/?" .dockerignore || fail ".dockerignore does not exclude ${must//\\/}"
done
ok ".dockerignore"

# --- 6. docker/compose.yaml ---
if python3 - "$df" docker/compose.yaml <<'PY' >"$scratch/compose.txt" 2>&1; then
import re, sys, yaml
dockerfile, compose_path = sys.argv[1], sys.argv[2]
targets = set(re.findall(r'^FROM \S+ AS (\S+)$', open(dockerfile).read(), re.M))
c = yaml.safe_load(open(compose_path))
errors = []
services, volumes = c.get("services", {}), c.get("volumes") or {}
pg = services.get("postgres", {})
if not str(pg.get("image", "")).startswith("postgres:15"):
    errors.append("postgres: not a postgres:15 image")
if "healthcheck" not in pg:
    errors.append("postgres: no healthcheck")
for name, s in services.items():
    b = s.get("build")
    if b:
        if b.get("dockerfile") != "docker/Dockerfile" or b.get("target") not in targets:
            errors.append(f"{name}: build is not a target of docker/Dockerfile ({b})")
    for v in s.get("volumes", []):
        src = v.split(":")[0]
        if not src.startswith((".", "/")) and src not in volumes:
            errors.append(f"{name}: volume {src} is not declared")
    for dep, cond in (s.get("depends_on") or {}).items():
        if dep not in services:
            errors.append(f"{name}: depends on unknown service {dep}")
        if cond.get("condition") == "service_healthy" and "healthcheck" not in services.get(dep, {}):
            errors.append(f"{name}: waits for {dep} to be healthy, which has no healthcheck")
for name in ("importer", "trial"):
    s = services.get(name, {})
    if (s.get("build") or {}).get("target") != "runtime":
        errors.append(f"{name}: not built from the runtime target")
    if (s.get("depends_on") or {}).get("postgres", {}).get("condition") != "service_healthy":
        errors.append(f"{name}: does not wait for a healthy postgres")
    env = s.get("environment") or {}
    if not all(k in env for k in ("PGHOST", "PGUSER", "PGPASSWORD", "PGDATABASE")):
        errors.append(f"{name}: PG* variables incomplete")
    if not any(str(v).endswith(":/data") for v in s.get("volumes", [])):
        errors.append(f"{name}: no volume on /data")
if "pgdata" not in volumes or not any(str(v).startswith("pgdata:") for v in pg.get("volumes", [])):
    errors.append("postgres: data not in the named volume pgdata")
trial = " ".join(services.get("trial", {}).get("command", []))
for want in ("--base-url=http://stand-ins:", "--geocoder=postcodes-io=http://stand-ins:"):
    if want not in trial:
        errors.append(f"trial: command lacks {want}")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY
  ok "docker/compose.yaml"
else
  while IFS= read -r line; do fail "docker/compose.yaml: $line"; done <"$scratch/compose.txt"
fi

if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all image checks passed"
