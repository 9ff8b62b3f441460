#!/usr/bin/python3
"""The offline trial of docker/compose.yaml, run on the host (no Docker engine here).

Reads the compose file and runs its `fixture`, `stand-ins` and `trial` services' commands with the
binaries of this build: the container paths (/fixture, /data) become scratch directories, the
service name `stand-ins` becomes 127.0.0.1, the fixed ports free ones, and `postgres` the test's
PostgreSQL (the PG* variables bin/with-postgres sets; a database of its own). Then checks what a
person trying it would see: exit 0, a report saying ok, and the rows the fixture promised in the
production table.

Usage: test_compose_trial.py --compose docker/compose.yaml --import-bin B --fixture-bin F --stand-ins-bin S
"""
import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import yaml


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--compose", "--import-bin", "--fixture-bin", "--stand-ins-bin"):
        ap.add_argument(name, required=True)
    args = ap.parse_args()
    with open(args.compose) as f:
        compose = yaml.safe_load(f)
    services = compose.get("services") or {}
    for name in ("postgres", "fixture", "stand-ins", "trial"):
        if name not in services:
            fail(f"{args.compose} has no service {name}")

    scratch = tempfile.mkdtemp(prefix="epc-compose-trial-")
    fixture_dir, data_dir = os.path.join(scratch, "fixture"), os.path.join(scratch, "data")
    os.makedirs(fixture_dir)
    os.makedirs(data_dir)
    ports = {p: str(free_port()) for p in ("8080", "8081", "8082")}

    def host_side(text):
        text = str(text).replace("/fixture", fixture_dir).replace("/data", data_dir)
        text = text.replace("--public-host=stand-ins", "--public-host=127.0.0.1")
        text = text.replace("--host=0.0.0.0", "--host=127.0.0.1").replace("http://stand-ins:", "http://127.0.0.1:")
        for container_port, port in ports.items():
            text = text.replace(container_port, port)
        return text

    # fixture: a one-shot shell command in the stand-ins image, where epc-fixture is on PATH.
    fixture = services["fixture"]
    entry, command = fixture.get("entrypoint"), fixture.get("command")
    if entry != ["/bin/sh", "-c"] or not isinstance(command, list) or len(command) != 1:
        fail("the fixture service should be a /bin/sh -c one-liner")
    script = host_side(command[0]).replace("epc-fixture ", shlex.quote(args.fixture_bin) + " ", 1)
    r = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"fixture: {script} exited {r.returncode}: {r.stderr}")
    expected = json.load(open(os.path.join(fixture_dir, "expected.json")))

    # stand-ins: the image's entrypoint is epc-stand-ins.
    stand_ins_args = [host_side(a) for a in services["stand-ins"].get("command") or []]
    stand_ins = subprocess.Popen([args.stand_ins_bin] + stand_ins_args, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(stand_ins.stdout.readline() or "null")
        if not ready or "epc_base_url" not in ready:
            fail(f"stand-ins did not start: {stand_ins.stderr.read()}")

        # postgres: a database of the test's own on the test's server.
        db = f"epc_compose_{os.getpid()}"
        subprocess.run(["psql", "-X", "-q", "-d", "postgres", "-c", f"CREATE DATABASE {db}"], check=True)
        env = dict(os.environ, PGDATABASE=db)
        trial = services["trial"]
        for key, value in (trial.get("environment") or {}).items():
            if not key.startswith("PG"):  # the trial's own, e.g. EPC_TOKEN; PG* point at compose's postgres
                env[key] = host_side(value)
        trial_args = [host_side(a) for a in trial.get("command") or []]
        started = time.time()
        r = subprocess.run([args.import_bin] + trial_args, env=env, capture_output=True, text=True)
        print(f"trial: epc-import {' '.join(trial_args)} -> exit {r.returncode} in {time.time() - started:.1f} s")
        if r.returncode != 0:
            fail(f"the trial exited {r.returncode}: {r.stderr[-3000:]}")
        report_path = next((a.split("=", 1)[1] for a in trial_args if a.startswith("--report=")), None)
        if not report_path:
            fail("the trial writes no --report")
        report = json.load(open(report_path))
        if report.get("status") != "ok" or report.get("publish", {}).get("rows") != expected["rows_loaded"]:
            fail(f"report: status {report.get('status')}, published {report.get('publish', {}).get('rows')} rows, "
                 f"expected {expected['rows_loaded']}")
        if not report.get("geocode", {}).get("found"):
            fail(f"the trial located no address: {report.get('geocode')}")
        count = subprocess.run(["psql", "-X", "-At", "-d", db, "-c", "SELECT count(*) FROM epc.domestic_certificates "
                                "WHERE latitude IS NOT NULL OR postcode IS NULL"],
                               capture_output=True, text=True, check=True).stdout.strip()
        if int(count) != expected["rows_loaded"]:
            fail(f"{count} geocoded rows in epc.domestic_certificates, expected {expected['rows_loaded']}")
        subprocess.run(["psql", "-X", "-q", "-d", "postgres", "-c", f"DROP DATABASE {db} WITH (FORCE)"], check=True)
    finally:
        stand_ins.terminate()
        stand_ins.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"ok: the compose trial published {expected['rows_loaded']} rows, as the fixture promised")
    return 0


if __name__ == "__main__":
    sys.exit(main())
