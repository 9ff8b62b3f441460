#!/usr/bin/env bash
# bin/image-build without a registry or AWS: it runs from a copy in a scratch git repository, with
# a PATH of chosen tools and stubs of `docker` and `aws` that log their arguments and behave as
# told by STUB_* variables (the login and push need a registry; the build itself is run for real
# by tests/deploy/test_image.py); "daemon down" uses Debian's real docker client. Checks the exit code and the message of every refusal, and the
# commands of a successful push.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
scratch=$(mktemp -d -t epc-test-image-build.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

failures=0
passes=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# The repository copy: the script and what it reads, committed.
repo=$scratch/repo
mkdir -p "$repo/bin" "$repo/docker"
cp "$repo_root/bin/image-build" "$repo/bin/"
cp "$repo_root/CMakeLists.txt" "$repo/"
cp "$repo_root/docker/Dockerfile" "$repo/docker/"
git_q() { git -C "$repo" -c user.name=test -c user.email=test@example.org "$@" >/dev/null; }
git_q init -q
git_q add -A
git_q commit -q -m initial
sha=$(git -C "$repo" rev-parse --short HEAD)

# Tools: the real ones image-build and git need, each linked by name into a directory of its own.
tools=$scratch/tools
mkdir -p "$tools"
for t in bash env git sed tr cat mktemp rm dirname; do
  ln -s "$(command -v "$t")" "$tools/$t"
done

# Stubs, in directories of their own so that each can be left off PATH.
log=$scratch/calls.log
stub_docker=$scratch/stub-docker
stub_aws=$scratch/stub-aws
mkdir -p "$stub_docker" "$stub_aws"
cat >"$stub_docker/docker" <<'STUB'
#!/usr/bin/env bash
echo "docker $*" >>"$STUB_LOG"
case $1 in
  version) echo 24.0.7 ;;
  login)
    password=$(cat)
    if [ "$password" != stub-ecr-password ]; then
      echo "Error response from daemon: login attempt failed: bad password" >&2
      exit 1
    fi
    echo "Login Succeeded" ;;
  push)
    [ "${STUB_DOCKER_PUSH:-ok}" = fail ] && { echo "denied: not authorized" >&2; exit 1; }
    echo "pushed $2" ;;
  build | tag) ;;
  *) echo "stub docker: unexpected command $1" >&2; exit 99 ;;
esac
STUB
cat >"$stub_aws/aws" <<'STUB'
#!/usr/bin/env bash
echo "aws $*" >>"$STUB_LOG"
case "$1 $2" in
  "cloudformation describe-stacks")
    case ${STUB_AWS_STACK:-ok} in
      ok) echo "123456789012.dkr.ecr.eu-west-2.amazonaws.com/epc-import-dev" ;;
      missing)
        echo "An error occurred (ValidationError) when calling the DescribeStacks operation: Stack with id epc-import-dev does not exist" >&2
        exit 254 ;;
      nocreds)
        echo "Unable to locate credentials. You can configure credentials by running \"aws configure\"." >&2
        exit 253 ;;
      nooutput) echo "None" ;;
    esac ;;
  "ecr get-login-password")
    if [ "${STUB_AWS_LOGIN:-ok}" = fail ]; then
      echo "An error occurred (AccessDeniedException) when calling the GetAuthorizationToken operation" >&2
      exit 254
    fi
    echo stub-ecr-password ;;
  *) echo "stub aws: unexpected command $*" >&2; exit 99 ;;
esac
STUB
chmod +x "$stub_docker/docker" "$stub_aws/aws"

# run NAME EXPECTED_CODE EXPECTED_MESSAGE PATH [ENV=VALUE...] -- ARGS...: run image-build, check
# its exit code and that stderr contains the message (a fixed string).
out=$scratch/out
run() {
  local name=$1 want_code=$2 want_msg=$3 path=$4
  shift 4
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  : >"$log"
  local code=0
  env -i HOME="$scratch" PATH="$path" STUB_LOG="$log" "${envs[@]}" \
    "$repo/bin/image-build" "$@" >"$out.stdout" 2>"$out.stderr" || code=$?
  if [ "$code" != "$want_code" ]; then
    fail "$name: exit code $code, expected $want_code; stderr:"
    sed 's/^/    /' "$out.stderr" >&2
    return
  fi
  if [ -n "$want_msg" ] && ! grep -qF -- "$want_msg" "$out.stderr"; then
    fail "$name: stderr lacks '$want_msg'; it was:"
    sed 's/^/    /' "$out.stderr" >&2
    return
  fi
  passes=$((passes + 1))
}
all=$tools:$stub_docker:$stub_aws

# Usage.
run "no environment" 2 "the environment is missing: dev, staging or production" "$all" --
run "unknown environment" 2 "unknown argument 'qa'" "$all" -- qa
run "unknown option" 2 "unknown argument '--push'" "$all" -- --push dev
run "two environments" 2 "one environment only" "$all" -- dev staging
run "--help" 0 "" "$all" -- --help
grep -q '^Exit codes:' "$out.stdout" || fail "--help: no 'Exit codes:' section on stdout"
[ -s "$log" ] && fail "usage errors must not call docker or aws: $(cat "$log")"

# Missing tools, daemon.
run "no docker" 3 "docker is not installed" "$tools:$stub_aws" -- dev
run "no aws" 3 "aws (the AWS CLI) is not installed" "$tools:$stub_docker" -- staging
# No daemon: Debian's real docker client (docker.io, bin/install-deps) with a socket nobody
# listens on, so the message relayed is docker's own.
real_docker=$scratch/real-docker
mkdir -p "$real_docker"
ln -s /usr/bin/docker "$real_docker/docker"
run "daemon down" 4 "the Docker daemon does not answer" "$tools:$real_docker:$stub_aws" \
  DOCKER_HOST="unix://$scratch/no-daemon.sock" -- production
grep -qF "Cannot connect to the Docker daemon at unix://$scratch/no-daemon.sock" "$out.stderr" ||
  fail "daemon down: docker's own message is not relayed"

# AWS side.
run "stack missing" 6 "the stack epc-import-dev does not exist" "$all" STUB_AWS_STACK=missing -- dev
grep -qF "aws cloudformation describe-stacks --stack-name epc-import-dev" "$log" ||
  fail "stack missing: describe-stacks was not asked about epc-import-dev"
run "no credentials" 5 "Unable to locate credentials" "$all" STUB_AWS_STACK=nocreds -- dev
run "no RepositoryUri" 6 "has no Output RepositoryUri" "$all" STUB_AWS_STACK=nooutput -- dev
run "ECR login refused" 7 "docker login to 123456789012.dkr.ecr.eu-west-2.amazonaws.com failed" \
  "$all" STUB_AWS_LOGIN=fail -- dev
grep -qF "AccessDeniedException" "$out.stderr" || fail "ECR login refused: aws's message is not relayed"

# Success: build, tag, push of <sha> and latest; the password only through stdin.
uri=123456789012.dkr.ecr.eu-west-2.amazonaws.com/epc-import-dev
run "push" 0 "pushed $uri:$sha and $uri:latest" "$all" -- dev
for want in \
  "docker login --username AWS --password-stdin 123456789012.dkr.ecr.eu-west-2.amazonaws.com" \
  "docker build -f docker/Dockerfile --target runtime" \
  "-t $uri:$sha ." \
  "docker tag $uri:$sha $uri:latest" \
  "docker push $uri:$sha" \
  "docker push $uri:latest"; do
  grep -qF -- "$want" "$log" || fail "push: no '$want' among the calls: $(cat "$log")"
done
grep -qF stub-ecr-password "$log" && fail "push: the ECR password appeared on a command line"
run "push fails" 10 "docker push $uri:$sha failed" "$all" STUB_DOCKER_PUSH=fail -- dev

# A dirty tree: refused, or tagged -dirty with --allow-dirty.
echo "# local change" >>"$repo/docker/Dockerfile"
run "dirty tree" 8 "the working tree has uncommitted changes" "$all" -- dev
grep -qF "docker build" "$log" && fail "dirty tree: it built anyway"
run "dirty tree allowed" 0 "pushed $uri:$sha-dirty and $uri:latest" "$all" -- --allow-dirty dev
grep -qF "WARNING" "$out.stderr" || fail "dirty tree allowed: no warning"

echo "$passes passed, $failures failed"
[ "$failures" -eq 0 ]
