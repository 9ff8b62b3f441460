#!/usr/bin/python3
"""The container image, built and run for real with Debian's Docker engine.

    test_image.py --repo REPO_ROOT --artifacts DIR [--cache DIR]

What AWS Batch runs and what a newcomer tries, tested as they are:
  1. starts a private dockerd (its own data root, exec root, pid file and socket; no iptables
     rules, no bridge; overlay2, or vfs when overlay2 cannot work here, said loudly)
  2. makes the base images debian:bookworm and debian:bookworm-slim without a registry:
     debootstrap --variant=minbase from the machine's Debian mirror, then docker import (the
     tarball is cached in --cache, so a second run skips debootstrap)
  3. builds docker/Dockerfile's runtime target as bin/image-build does, then every image of
     docker/compose.yaml through Compose v1 (docker-compose) as the compose file's header says
  4. checks the image: --version, --help, runs as uid 10001, every shared library found (ldd in
     the image; the list is printed), its size within docker/image-budget
  5. the compose offline trial: exit 0, the report, the published rows against the fixture's own
     expectations read back from PostgreSQL
  6. the AWS Batch job definitions of cloudformation.yaml run in the image as Batch would run them
     (the template's command with its parameters substituted, its environment, the secrets as
     variables, /data a host directory owned by uid 10001, a read-only root file system), against
     the same PostgreSQL over TLS, with the stand-in EPC service, s3rver as S3 and a stand-in of
     Batch's SubmitJob: check-release submits the sharded import, the shard loads and the publish
     it submitted run, then a full run into another database; rows and archives are checked
  7. Adminer: compose's viewer opened in headless chromium, logged in; the production table and its
     row count must be on the page (screenshots kept in --artifacts)
Then stops the daemon by its pid, unmounts what it mounted, removes its scratch, and checks that the
host's firewall, ip_forward and network links are as they were.

Needs root (dockerd), and the packages of `bin/install-deps --container` (docker.io, docker-compose,
debootstrap, chromium; playwright-core and s3rver from npm). Exit 0 when every check passes.
"""

import argparse
import contextlib
import glob
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import test_template  # noqa: E402  (the template loader and intrinsic resolver)

DOCKER = "/usr/bin/docker"  # Debian's client: its BuildKit builds only the stages a target needs
COMPOSE = "/usr/bin/docker-compose"
# The token the stand-in EPC service accepts (tests/support/epc_service.hpp); not a secret.
STAND_IN_TOKEN = "tok-4f1c9a7e2b5d8c3f6a0e9b1d4c7f2a5e8b3d6c9f0a1e4b7d2c5f8a3e6b9d0c1f"
PG_PASSWORD = "epc-trial-password"  # the compose PostgreSQL's password in this test (EPC_PG_PASSWORD)

failures = []


def log(message):
    print(message, flush=True)


def fail(message):
    failures.append(message)
    print(f"FAIL: {message}", flush=True)


def ok(message):
    print(f"ok: {message}", flush=True)


def check(condition, message, detail=""):
    if condition:
        ok(message)
    else:
        fail(f"{message}{': ' + detail if detail else ''}")
    return condition


class Fatal(Exception):
    """A step the rest depends on failed: stop, clean up, report."""


def run(argv, *, env=None, timeout=1800, check_rc=True, what=None, stdin=subprocess.DEVNULL, quiet=False):
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=stdin)
    took = time.monotonic() - started
    if not quiet:
        log(f"  $ {' '.join(argv[:12])}{' ...' if len(argv) > 12 else ''}  -> {proc.returncode} ({took:.1f} s)")
    if check_rc and proc.returncode != 0:
        raise Fatal(f"{what or argv[0]} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ the host's state

def host_state():
    """What the daemon must not change: firewall rules, IPv4 forwarding, network links."""
    state = {}
    for tool in ("iptables-save", "ip6tables-save"):
        path = shutil.which(tool)
        if path:
            out = subprocess.run([path], capture_output=True, text=True).stdout
            # Counters and the generator's timestamp comments change by themselves.
            state[tool] = [re.sub(r"\[\d+:\d+\]", "", line) for line in out.splitlines() if not line.startswith("#")]
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        state["ip_forward"] = f.read().strip()
    state["links"] = sorted(os.listdir("/sys/class/net"))
    return state


# ------------------------------------------------------------------------------ the daemon

class Daemon:
    """dockerd with everything of its own under one scratch directory."""

    def __init__(self, scratch):
        self.dir = scratch
        self.sock = os.path.join(scratch, "docker.sock")
        self.pidfile = os.path.join(scratch, "dockerd.pid")
        self.log_path = os.path.join(scratch, "dockerd.log")
        self.proc = None
        self.driver = None
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}", DOCKER_BUILDKIT="1",
                        COMPOSE_DOCKER_CLI_BUILD="1",
                        # docker-compose's CLI builds call `docker` from PATH: Debian's, not a newer
                        # static client without buildx that may come first on this machine's PATH.
                        PATH="/usr/bin:/usr/sbin:/bin:/sbin:" + os.environ.get("PATH", ""),
                        DOCKER_CONFIG=os.path.join(scratch, "client-config"))

    def start(self, driver):
        self.driver = driver
        argv = ["/usr/sbin/dockerd", "--data-root", os.path.join(self.dir, "data"),
                "--exec-root", os.path.join(self.dir, "exec"), "--pidfile", self.pidfile,
                "--host", f"unix://{self.sock}", "--storage-driver", driver,
                # Leave the host's network alone: no firewall rules, no docker0, no forwarding.
                # Builds use the host's network; containers talk over compose's own bridges.
                "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
                "--bridge=none"]
        logf = open(self.log_path, "a")
        self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if subprocess.run([DOCKER, "version"], env=self.env, capture_output=True).returncode == 0:
                info = json.loads(run([DOCKER, "info", "--format", "{{json .}}"], env=self.env, quiet=True).stdout)
                return info.get("Driver") == driver
            time.sleep(0.5)
        return False

    def tail(self, lines=30):
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def stop(self):
        if not self.proc:
            return
        # By its pid: the one this test started, and nothing else.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None


def mounts_under(prefix):
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    points = [p.replace("\\040", " ") for p in points]
    return [p for p in points if p == prefix or p.startswith(prefix.rstrip("/") + "/")]


def unmount_all(prefix):
    for point in sorted(mounts_under(prefix), key=len, reverse=True):
        subprocess.run(["umount", point], capture_output=True)
    for point in sorted(mounts_under(prefix), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)
    return mounts_under(prefix)


def scratch_on_tmpfs(path):
    """Mounts a tmpfs on the scratch directory when the machine has the memory to spare.

    The daemon's data root holds a few GB of layers (the build stage's compilers among them).
    On a disk mounted with online discard, as here, deleting them at the end takes minutes;
    unmounting a tmpfs takes nothing. Without 12 GB available the disk is used.
    """
    with open("/proc/meminfo") as f:
        available_kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    if available_kb < 12 * 1024 * 1024:
        log(f"scratch: {path} on disk ({available_kb // 1024} MB of memory available, 12 GB wanted for a tmpfs)")
        return "disk"
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10g,mode=0711", "epc-image-test", path],
                      capture_output=True).returncode != 0:
        log(f"scratch: {path} on disk (mounting a tmpfs failed)")
        return "disk"
    log(f"scratch: {path} on a tmpfs of at most 10 GB")
    return "tmpfs"


# ------------------------------------------------------------------------------ base images

def debian_mirror():
    """The Debian archive apt uses here (deb822 URIs: lines or one-line `deb URL suite`)."""
    candidates = []
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
        try:
            text = open(path).read()
        except OSError:
            continue
        candidates += re.findall(r"^\s*URIs:\s*(\S+)", text, re.M)
        candidates += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\b", text, re.M)
    for url in candidates:
        if "security" not in url:
            return url.rstrip("/")
    return "http://deb.debian.org/debian"


def base_tarball(cache, scratch):
    """debian:bookworm minbase as a tarball, made once per machine (and again after 14 days)."""
    mirror = debian_mirror()
    os.makedirs(cache, exist_ok=True)
    tag = hashlib.sha256(mirror.encode()).hexdigest()[:8]
    tarball = os.path.join(cache, f"debian-bookworm-minbase-{tag}.tar")
    if os.path.exists(tarball) and time.time() - os.path.getmtime(tarball) < 14 * 86400:
        log(f"base image: cached {tarball}")
        return tarball
    log(f"base image: debootstrap --variant=minbase bookworm from {mirror} (about a minute)")
    rootfs = os.path.join(scratch, "rootfs")
    run(["/usr/sbin/debootstrap", "--variant=minbase", "bookworm", rootfs, mirror], timeout=900,
        what="debootstrap")
    # As Debian's own slim images: no downloaded packages, no package lists (a Dockerfile's
    # apt-get update fetches current ones); about 80 MB less in every image built on it.
    for junk in glob.glob(os.path.join(rootfs, "var/cache/apt/archives/*.deb")) + \
            glob.glob(os.path.join(rootfs, "var/cache/apt/*.bin")) + \
            glob.glob(os.path.join(rootfs, "var/lib/apt/lists/*_*")):
        os.remove(junk)
    partial = tarball + ".partial"
    with open(partial, "wb") as out:
        subprocess.run(["tar", "--numeric-owner", "-C", rootfs, "-c", "."], stdout=out, check=True)
    os.replace(partial, tarball)
    unmount_all(rootfs)  # debootstrap leaves nothing mounted on success; be sure
    shutil.rmtree(rootfs, ignore_errors=True)
    return tarball


# ------------------------------------------------------------------------------ stand-ins on the host

class BatchStandIn(http.server.ThreadingHTTPServer):
    """AWS Batch's SubmitJob (POST /v1/submitjob) as the AWS CLI calls it: records each request."""

    def __init__(self, host):
        self.jobs = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path.rstrip("/") != "/v1/submitjob":
                    self.send_response(404)
                    self.end_headers()
                    return
                job_id = f"00000000-0000-4000-8000-{len(outer.jobs) + 1:012d}"
                body["_jobId"] = job_id
                outer.jobs.append(body)
                answer = json.dumps({"jobArn": f"arn:aws:batch:eu-west-2:123456789012:job/{job_id}",
                                     "jobName": body.get("jobName"), "jobId": job_id}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        super().__init__((host, 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://{self.server_address[0]}:{self.server_address[1]}"


# ------------------------------------------------------------------------------ the test

class ImageTest:
    def __init__(self, args):
        self.repo = args.repo
        self.artifacts = args.artifacts
        self.cache = args.cache
        self.scratch = tempfile.mkdtemp(prefix="epcd.", dir="/var/tmp")  # short: socket paths
        self.scratch_fs = scratch_on_tmpfs(self.scratch)
        os.chmod(self.scratch, 0o711)
        self.d = Daemon(self.scratch)
        self.project = f"epcimage{os.getpid()}"
        self.compose_env = dict(self.d.env, EPC_PG_PASSWORD=PG_PASSWORD,
                                EPC_ADMINER_PORT=str(free_port()))
        self.s3rver = None
        self.timings = {}

    def docker(self, *argv, **kw):
        return run([DOCKER, *argv], env=self.d.env, **kw)

    def compose(self, *argv, **kw):
        return run([COMPOSE, "--project-name", self.project, "--file",
                    os.path.join(self.repo, "docker/compose.yaml"), "--profile", "offline", *argv],
                   env=self.compose_env, **kw)

    def timed(self, name, fn, *a):
        started = time.monotonic()
        try:
            return fn(*a)
        finally:
            self.timings[name] = time.monotonic() - started

    # -- 1
    def start_daemon(self):
        if self.d.start("overlay2"):
            ok("dockerd started with the overlay2 storage driver")
            return
        reason = self.d.tail()
        self.d.stop()
        unmount_all(self.scratch)
        log("WARNING: dockerd could not use overlay2 here; falling back to vfs (slower, more disk). "
            f"Its log said:\n{reason}")
        if not self.d.start("vfs"):
            raise Fatal(f"dockerd does not start, with overlay2 nor with vfs; its log:\n{self.d.tail()}")
        ok("dockerd started with the vfs storage driver (overlay2 failed, see above)")

    # -- 2
    def base_images(self):
        tarball = base_tarball(self.cache, self.scratch)
        with open(tarball, "rb") as f:
            proc = subprocess.run([DOCKER, "import", "-", "debian:bookworm"], stdin=f, env=self.d.env,
                                  capture_output=True, text=True)
        if proc.returncode != 0:
            raise Fatal(f"docker import: {proc.stderr}")
        self.docker("tag", "debian:bookworm", "debian:bookworm-slim")
        ok("debian:bookworm and debian:bookworm-slim imported from a debootstrap tarball")

    # -- 3
    def build(self):
        version = re.search(r"project\(epc-import VERSION ([0-9.]+)",
                            open(os.path.join(self.repo, "CMakeLists.txt")).read()).group(1)
        self.version = version
        # As bin/image-build builds it, from the repository root, on the host's network.
        # (-f and the context as absolute paths: ctest runs this from the build tree)
        self.docker("build", "--network", "host", "-f", os.path.join(self.repo, "docker/Dockerfile"),
                    "--target", "runtime",
                    "--build-arg", f"VERSION={version}", "--build-arg", "REVISION=test",
                    "-t", "epc-import:local", self.repo, timeout=2400, what="docker build --target runtime")
        ok("docker build --target runtime")
        # Every image of the compose file, as a newcomer builds them (v1; BuildKit through the CLI).
        self.compose("build", timeout=2400, what="docker-compose build")
        ok("docker-compose --profile offline build (runtime again from cache, stand-ins, postgres, adminer)")

    # -- 4
    def check_image(self):
        image = "epc-import:local"
        proc = self.docker("run", "--rm", image, "--version", check_rc=False)
        check(proc.returncode == 0 and proc.stdout.strip() == f"epc-import {self.version}",
              f"docker run {image} --version prints 'epc-import {self.version}'", proc.stdout + proc.stderr)
        proc = self.docker("run", "--rm", image, check_rc=False)  # CMD ["--help"]
        check(proc.returncode == 0 and "--certtype" in proc.stdout and "Exit codes" in proc.stdout,
              "docker run with no arguments prints the help (CMD --help)", (proc.stdout + proc.stderr)[-500:])
        proc = self.docker("run", "--rm", "--entrypoint", "id", image, check_rc=False)
        check(proc.stdout.startswith("uid=10001(epc) gid=10001(epc)"), "the image runs as epc, uid 10001",
              proc.stdout)

        libs = {}
        for img, binaries in ((image, ["/usr/local/bin/epc-import"]),
                              ("epc-import-stand-ins:local", ["/usr/local/bin/epc-stand-ins", "/usr/local/bin/epc-fixture"])):
            for b in binaries:
                proc = self.docker("run", "--rm", "--entrypoint", "ldd", img, b, check_rc=False)
                missing = [line.strip() for line in proc.stdout.splitlines() if "not found" in line]
                check(proc.returncode == 0 and not missing, f"{img}: every shared library of {b} is in the image",
                      "; ".join(missing) or proc.stderr)
                libs[b] = [line.split()[0] for line in proc.stdout.splitlines() if "=>" in line]
        log(f"shared libraries of epc-import in the image ({len(libs['/usr/local/bin/epc-import'])}): "
            + " ".join(libs["/usr/local/bin/epc-import"]))
        for tool in ("epc-stand-ins", "epc-fixture"):
            proc = self.docker("run", "--rm", "--entrypoint", tool, "epc-import-stand-ins:local", "--help", check_rc=False)
            check(proc.returncode == 0, f"{tool} --help in the stand-ins image", proc.stderr[-300:])

        size = int(self.docker("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
        budget_file = os.path.join(self.repo, "docker/image-budget")
        budget = 0
        for line in open(budget_file):
            line = line.split("#", 1)[0].strip()
            if line:
                budget = int(line)
        self.size = size
        log(f"image size: {image} is {size / 1e6:.1f} MB (budget {budget / 1e6:.0f} MB, docker/image-budget)")
        check(size <= budget, f"the image's size is within docker/image-budget ({budget / 1e6:.0f} MB)",
              f"{size / 1e6:.1f} MB: find what grew (docker history {image}); raise the budget only for a reason")
        with open(os.path.join(self.artifacts, "image-report.txt"), "w") as f:
            f.write(f"{image}: {size} bytes\n")
            for b, names in libs.items():
                f.write(f"{b}:\n" + "".join(f"  {n}\n" for n in names))
            f.write(self.docker("history", image, quiet=True).stdout)

    # -- 5
    def compose_trial(self):
        proc = self.compose("run", "--rm", "trial", check_rc=False, timeout=900)
        if not check(proc.returncode == 0, "docker-compose run --rm trial exits 0",
                     f"exit {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"):
            raise Fatal("the compose trial failed")
        # What the fixture service promised (epc-fixture's JSON) and what the trial reported.
        self.expected = json.loads(self.compose("run", "--rm", "-T", "--no-deps", "fixture",
                                                "cat /fixture/expected.json").stdout)
        report = json.loads(self.compose("run", "--rm", "-T", "--no-deps", "--entrypoint", "cat", "trial",
                                         "/data/trial-report.json").stdout)
        rows = self.expected["rows_loaded"]
        check(report.get("status") == "ok" and report.get("publish", {}).get("rows") == rows,
              f"the trial's report: status ok, {rows} rows published",
              f"status {report.get('status')}, published {report.get('publish', {}).get('rows')}")
        check(bool(report.get("geocode", {}).get("found")), "the trial located addresses", str(report.get("geocode")))
        published = self.psql("epc", "SELECT count(*) FROM epc.domestic_certificates")
        # A certificate whose address key has no postcode (none, or an answer such as 'N/A' that
        # is kept as text) cannot be located by postcodes.io; every other one must be.
        located = self.psql("epc", "SELECT count(*) FROM epc.domestic_certificates "
                                   "WHERE latitude IS NOT NULL OR coalesce(split_part(address_key, '|', 2), '') = ''")
        check(published == rows and located == rows,
              f"epc.domestic_certificates holds the {rows} rows the fixture promised, all located",
              f"{published} rows, {located} located")
        self.rows = rows

    def psql(self, db, sql):
        proc = self.compose("exec", "-T", "postgres", "psql", "-X", "-At", "-U", "epc", "-d", db, "-c", sql,
                            quiet=True)
        return int(proc.stdout.strip())

    # -- 6
    def batch_jobs(self):
        network = f"{self.project}_default"
        net = json.loads(self.docker("network", "inspect", network, quiet=True).stdout)[0]
        gateway = net["IPAM"]["Config"][0]["Gateway"]
        # The host is reachable from the containers at the bridge's own address (delivered locally:
        # no forwarding, no firewall rule needed): s3rver and the Batch stand-in listen there.
        s3rver_bin = os.path.join(os.path.expanduser("~"), ".cache/epc-import/s3rver/node_modules/.bin/s3rver")
        if not os.path.exists(s3rver_bin):
            raise Fatal(f"s3rver is not installed at {s3rver_bin}: run bin/install-deps")
        s3_dir = os.path.join(self.scratch, "s3")
        os.makedirs(s3_dir)
        s3_port = free_port(gateway)
        buckets = ["epc-import-dev-raw", "epc-import-dev-failed"]
        template = test_template.load_template(os.path.join(self.repo, "cloudformation.yaml"))
        # The stack's parameters as an operator would set them for this database and these stand-ins.
        stack_params = {"DatabaseHost": "postgres", "DatabaseUsername": "epc", "DatabaseName": "batch",
                        "Geocoder": "postcodes-io=http://stand-ins:8082", "ImportShards": "2",
                        "Source": "current"}
        resolver = test_template.Resolver(template)
        resolver.params.update(stack_params)
        raw_bucket = resolver.ref("RawArchiveBucket")
        failed_bucket = resolver.ref("FailedArchiveBucket")
        buckets = [raw_bucket, failed_bucket]
        s3_log = open(os.path.join(self.scratch, "s3rver.log"), "w")
        argv = [s3rver_bin, "-d", s3_dir, "-a", gateway, "-p", str(s3_port)]
        for b in buckets:
            argv += ["--configure-bucket", b]
        self.s3rver = subprocess.Popen(argv, stdout=s3_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        batch = BatchStandIn(gateway)
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection((gateway, s3_port), timeout=1):
                break
            if time.monotonic() > deadline or self.s3rver.poll() is not None:
                raise Fatal(f"s3rver did not start: {open(s3_log.name).read()}")
            time.sleep(0.3)

        # The database the jobs import into; the stand-ins of the compose trial still run.
        for db in ("batch", "batch_run"):
            self.compose("exec", "-T", "postgres", "createdb", "-U", "epc", db)
        # /data: the instance's /var/lib/epc-import, given to uid 10001 by the launch template.
        data = os.path.join(self.scratch, "instance-data")
        os.makedirs(data)
        os.chown(data, 10001, 10001)
        os.chmod(data, 0o750)

        secrets = {"EPC_TOKEN": STAND_IN_TOKEN, "EPC_API_EMAIL": "", "EPC_API_KEY": "", "PGPASSWORD": PG_PASSWORD}
        aws_env = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_DEFAULT_REGION": "eu-west-2",
                   "AWS_EC2_METADATA_DISABLED": "true"}
        # Endpoints the real AWS would provide: the only arguments added to the template's command.
        extra = ["--base-url", "http://stand-ins:8080", "--s3-endpoint-url", f"http://{gateway}:{s3_port}"]

        def job(logical, parameters=None, array=None, database=None, expect=0):
            props = template["Resources"][logical]["Properties"]
            cp = props["ContainerProperties"]
            r = test_template.Resolver(template)
            r.params.update(stack_params)
            if database:
                r.params["DatabaseName"] = database
            params = {k: str(v) for k, v in r.resolve(props.get("Parameters") or {}).items()}
            params.update(parameters or {})
            argv = []
            for element in cp["Command"]:
                value = str(r.resolve(element))
                m = re.fullmatch(r"Ref::(\w+)", value)
                argv.append(params[m.group(1)] if m else value)
            if argv[0] == "check-release":
                args = argv + ["--base-url", "http://stand-ins:8080", "--batch-endpoint-url", batch.url]
            elif argv[0] == "publish":
                args = argv
            else:
                args = argv + extra
            env = {e["Name"]: str(r.resolve(e["Value"])) for e in cp.get("Environment") or []}
            for s in cp.get("Secrets") or []:
                env[s["Name"]] = secrets[s["Name"]]
            env.update(aws_env)
            if array:
                env.update({"AWS_BATCH_JOB_ARRAY_INDEX": str(array[0]), "AWS_BATCH_JOB_ARRAY_SIZE": str(array[1])})
            docker = ["run", "--rm", "--network", network, "--read-only", "--tmpfs", "/tmp"]
            for m in cp.get("MountPoints") or []:
                docker += ["-v", f"{data}:{m['ContainerPath']}"]
            for k, v in env.items():
                docker += ["-e", f"{k}={v}"]
            proc = self.docker(*docker, "epc-import:local", *args, check_rc=False, timeout=900)
            shown = f"{logical}{' [' + str(array[0]) + '/' + str(array[1]) + ']' if array else ''}: epc-import {' '.join(argv)}"
            check(proc.returncode == expect, f"{shown} exits {expect}",
                  f"exit {proc.returncode}:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
            return proc

        definitions = {test_template.Resolver(template).ref(name): name for name in test_template.JOB_DEFINITIONS}
        job("ReleaseCheckJobDefinition")
        check([j.get("jobDefinition") and definitions.get(j["jobDefinition"]) for j in batch.jobs]
              == ["ShardLoadJobDefinition", "PublishJobDefinition"],
              "check-release submitted the shard loads (array of 2) and the publish after them",
              json.dumps(batch.jobs)[:1500])
        submitted = list(batch.jobs)
        for j in submitted:
            logical = definitions.get(j.get("jobDefinition"))
            params = j.get("parameters") or {}
            size = (j.get("arrayProperties") or {}).get("size")
            if logical == "ShardLoadJobDefinition":
                check(size == 2, "the shard loads are an array job of 2", str(j.get("arrayProperties")))
                for i in range(size or 0):
                    job(logical, params, array=(i, size))
            elif logical == "PublishJobDefinition":
                check([d.get("jobId") for d in j.get("dependsOn") or []] == [submitted[0]["_jobId"]],
                      "the publish depends on the shard loads", str(j.get("dependsOn")))
                job(logical, params)
        rows = self.psql("batch", "SELECT count(*) FROM epc.domestic_certificates")
        check(rows == self.rows, f"after the sharded import Batch would run, database batch holds {self.rows} rows",
              f"{rows}")
        job("ReleaseCheckJobDefinition")
        check(len(batch.jobs) == len(submitted), "a second check-release finds nothing new and submits nothing",
              json.dumps(batch.jobs[len(submitted):])[:500])

        job("RunJobDefinition", database="batch_run")
        rows = self.psql("batch_run", "SELECT count(*) FROM epc.domestic_certificates")
        check(rows == self.rows, f"the run job published {self.rows} rows into database batch_run", f"{rows}")
        # What the bucket holds, asked through the S3 API with the image's own AWS CLI.
        listing = self.docker("run", "--rm", "--network", network, "--read-only", "--tmpfs", "/tmp",
                              *[f"--env={k}={v}" for k, v in aws_env.items()], "--entrypoint", "aws",
                              "epc-import:local", "--endpoint-url", f"http://{gateway}:{s3_port}", "s3", "ls",
                              "--recursive", f"s3://{raw_bucket}/archives/", check_rc=False)
        archives = [line.split()[-1] for line in listing.stdout.splitlines() if line.strip().endswith(".zip")]
        check(len(archives) >= 1, f"the downloaded archive was kept in s3://{raw_bucket}/archives/ (s3rver)",
              f"{listing.stdout}{listing.stderr}")
        report = os.path.join(data, "report.json")
        check(os.path.exists(report) and os.stat(report).st_uid == 10001,
              "the run job wrote /data/report.json on the instance's volume, as uid 10001")
        self.s3rver.terminate()
        self.s3rver.wait(timeout=10)
        self.s3rver = None
        batch.shutdown()
        batch.server_close()

    # -- 7
    def adminer(self):
        self.compose("up", "-d", "adminer", timeout=300)
        url = f"http://127.0.0.1:{self.compose_env['EPC_ADMINER_PORT']}/"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", int(self.compose_env["EPC_ADMINER_PORT"])), timeout=1):
                break
            if time.monotonic() > deadline:
                raise Fatal(f"Adminer does not answer at {url}")
            time.sleep(0.3)
        pw = os.path.join(os.path.expanduser("~"), ".cache/epc-import/playwright")
        if not os.path.exists(os.path.join(pw, "node_modules/playwright-core/package.json")):
            raise Fatal(f"playwright-core is not installed in {pw}: run bin/install-deps (it needs npm)")
        proc = run(["node", os.path.join(HERE, "adminer_check.cjs"), pw, url, "epc", PG_PASSWORD, "epc",
                    self.artifacts], check_rc=False, timeout=180)
        if not check(proc.returncode == 0, "chromium opened Adminer and logged in", proc.stderr[-2000:]):
            return
        seen = json.loads(proc.stdout)
        check("domestic_certificates" in seen.get("tables", []), "Adminer lists epc.domestic_certificates",
              str(seen.get("tables")))
        numbers = [int(n) for n in re.findall(r"\d+", seen.get("count_text", "").replace(",", ""))]
        check(self.rows in numbers, f"Adminer shows its row count, {self.rows}", repr(seen.get("count_text")))
        log("screenshots: " + " ".join(seen.get("screenshots", [])))

    # -- the end
    def cleanup(self):
        if self.s3rver:
            self.s3rver.terminate()
            self.s3rver.wait(timeout=10)
        if self.d.proc and self.d.proc.poll() is None:
            with open(os.path.join(self.artifacts, "dockerd.log"), "w") as f:
                f.write(self.d.tail(400))
            self.compose("down", "--volumes", "--remove-orphans", check_rc=False, timeout=300,
                         quiet=True)
            ids = self.docker("ps", "-aq", check_rc=False, quiet=True).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check_rc=False, quiet=True)
        self.d.stop()
        left = unmount_all(self.scratch)
        if left:
            fail(f"mounts left under {self.scratch}: {left}")
        shutil.rmtree(self.scratch, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, help="the repository root")
    ap.add_argument("--artifacts", required=True, help="where screenshots, the image report and logs go")
    ap.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache/epc-import/base-images"),
                    help="where the debootstrap tarball is kept between runs")
    args = ap.parse_args()
    args.repo = os.path.abspath(args.repo)
    os.makedirs(args.artifacts, exist_ok=True)
    if os.geteuid() != 0:
        # dockerd needs root. A developer with password-less sudo runs the test through it.
        if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
            return subprocess.run(["sudo", "-n", "--preserve-env=HOME", sys.executable, os.path.abspath(__file__),
                                   "--repo", args.repo, "--artifacts", args.artifacts, "--cache", args.cache]).returncode
        print("FAIL: the image test starts its own dockerd and needs root (CI runs as root) or "
              "password-less sudo; run it as root, e.g. sudo ctest -L deploy", file=sys.stderr)
        return 1
    for tool in ("/usr/sbin/dockerd", DOCKER, COMPOSE, "/usr/sbin/debootstrap", "/usr/bin/chromium",
                 shutil.which("node") or "node"):
        if not os.access(tool, os.X_OK):
            print(f"FAIL: {tool} is missing: run bin/install-deps --container (node comes with the machine)",
                  file=sys.stderr)
            return 1

    before = host_state()
    t = ImageTest(args)
    started = time.monotonic()
    try:
        for name, step in (("daemon", t.start_daemon), ("base images", t.base_images), ("build", t.build),
                           ("image checks", t.check_image), ("compose trial", t.compose_trial),
                           ("batch jobs", t.batch_jobs), ("adminer", t.adminer)):
            log(f"--- {name}")
            t.timed(name, step)
    except Fatal as e:
        fail(str(e))
    except subprocess.TimeoutExpired as e:
        fail(f"timed out: {e}")
    finally:
        t.timed("cleanup", t.cleanup)
    after = host_state()
    for key in before:
        check(before[key] == after.get(key), f"the host's {key} is as it was",
              f"before {before[key]!r:.300}, after {after.get(key)!r:.300}")
    log("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.timings.items())
        + f"; total {time.monotonic() - started:.0f} s")
    owner = os.environ.get("SUDO_UID")
    if owner:  # run through sudo: the artifacts belong to the developer, not root
        for root, dirs, files in os.walk(args.artifacts):
            for name in dirs + files:
                os.chown(os.path.join(root, name), int(owner), int(os.environ.get("SUDO_GID", owner)))
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print("all image checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
