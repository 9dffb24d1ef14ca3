#!/usr/bin/env python3
"""Spawn benchmark: POST /v1/servers -> ACTIVE, against a baseline measured in the same run.

Baseline: what the agent does at minimum, done by hand with the stock tools -- `qemu-img create
-f qcow2 -b <base> -F <fmt>` for the root overlay plus `virsh create` of an equivalent domain XML
(the agent's own XML for the same flavor and image, renamed). Both end when libvirt reports the
domain running. Prints a Markdown table for the README.

Usage: scripts/bench_spawn.py [N]   (run scripts/setup.sh first; builds the release binary)
"""
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 10
BIN = os.path.join(ROOT, "target", "release", "hyperlet")
GUEST = os.environ.get("HYPERLET_GUEST_CACHE", "/var/cache/hyperlet-tests/guest")


def run(*args, **kw):
    result = subprocess.run(args, capture_output=True, text=True, **kw)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def virsh(*args):
    return run("virsh", "-c", "qemu:///system", *args)


class Agent:
    def __init__(self, work):
        self.state = os.path.join(work, "state")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = os.path.join(work, "bench.toml")
        with open(conf, "w") as f:
            f.write("[hypervisor]\nsync_interval_ms = 500\n[capacity]\ncpu_allocation_ratio = 16.0\n")
        self.log = open(os.path.join(work, "agent.log"), "w")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--config", conf, "--state-dir", self.state, "--listen", f"127.0.0.1:{self.port}"],
            stderr=self.log, stdout=subprocess.DEVNULL)
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        self.token = open(os.path.join(self.state, "admin.token")).read().strip()

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                text = resp.read()
                return resp.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def upload(self, path, disk_format, container, props):
        status, image = self.call("POST", "/v1/images", {
            "name": os.path.basename(path), "disk_format": disk_format,
            "container_format": container, "properties": props})
        assert status == 201, image
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/images/{image['id']}/file",
                                     data=open(path, "rb").read(), method="PUT")
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/octet-stream")
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def spawn_agent(agent, image, flavor):
    start = time.perf_counter()
    status, server = agent.call("POST", "/v1/servers", {"name": "bench", "image_id": image, "flavor": flavor})
    assert status == 202, server
    while True:
        _, s = agent.call("GET", f"/v1/servers/{server['id']}")
        if s["status"] == "ACTIVE":
            return time.perf_counter() - start, server["id"]
        assert s["status"] == "BUILD", s
        time.sleep(0.005)


def delete_agent(agent, sid):
    agent.call("DELETE", f"/v1/servers/{sid}")
    while agent.call("GET", f"/v1/servers/{sid}")[0] != 404:
        time.sleep(0.05)


def spawn_baseline(template, base, fmt, work, i):
    name = f"bench-baseline-{i}-{uuid.uuid4().hex[:8]}"
    overlay = os.path.join(work, f"{name}.qcow2")
    xml = template
    xml = re.sub(r"<name>[^<]*</name>", f"<name>{name}</name>", xml, count=1)
    new_uuid = uuid.uuid4()
    xml = re.sub(r"<uuid>[^<]*</uuid>", f"<uuid>{new_uuid}</uuid>", xml, count=1)
    xml = re.sub(r"<entry name='uuid'>[^<]*</entry>", f"<entry name='uuid'>{new_uuid}</entry>", xml)
    xml = re.sub(r"(<source file=')[^']*root.qcow2(')", rf"\g<1>{overlay}\g<2>", xml)
    xml = re.sub(r"(<log file=')[^']*(')", rf"\g<1>{work}/{name}.log\g<2>", xml)
    path = os.path.join(work, f"{name}.xml")
    with open(path, "w") as f:
        f.write(xml)
    start = time.perf_counter()
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", fmt, overlay, "1G")
    virsh("create", path)
    elapsed = time.perf_counter() - start
    virsh("destroy", name)
    return elapsed


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "hyperlet"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    run("bash", os.path.join(ROOT, "tests", "guest", "build.sh"), GUEST)
    work = tempfile.mkdtemp(prefix="hyperlet-bench-", dir="/var/tmp")
    os.chmod(work, 0o755)
    agent = Agent(work)
    try:
        kernel = agent.upload(os.path.join(GUEST, "vmlinuz"), "aki", "aki", {})
        ramdisk = agent.upload(os.path.join(GUEST, "initrd.img"), "ari", "ari", {})
        root = agent.upload(os.path.join(GUEST, "root.qcow2"), "qcow2", "bare", {
            "kernel_id": kernel["id"], "ramdisk_id": ramdisk["id"], "os_command_line": "console=ttyS0"})
        flavor = {"vcpus": 1, "ram_mb": 128, "disk_gb": 1}
        # Warm-up, and the agent's XML as the baseline's template.
        _, sid = spawn_agent(agent, root["id"], flavor)
        template = virsh("dumpxml", "--inactive", f"hyperlet-{sid}")
        delete_agent(agent, sid)
        base = os.path.join(agent.state, "images", "blobs", f"{root['checksum']}.qcow2")
        ours, baseline = [], []
        for i in range(N):  # alternate, so both see the same machine load
            t, sid = spawn_agent(agent, root["id"], flavor)
            ours.append(t)
            delete_agent(agent, sid)
            baseline.append(spawn_baseline(template, base, "qcow2", work, i))
    finally:
        agent.stop()
        for line in virsh("list", "--all", "--name").split():
            if line.startswith("bench-baseline-"):
                subprocess.run(["virsh", "-c", "qemu:///system", "destroy", line], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    p50o, p50b = statistics.median(ours), statistics.median(baseline)
    print(f"| spawn (n={N}, 128 MiB TCG guest, 1 GiB root) | p50 | p90 | max |")
    print("|---|---:|---:|---:|")
    print(f"| hyperlet `POST /v1/servers` → ACTIVE | {p50o*1000:.0f} ms | {pct(ours, 90)*1000:.0f} ms | {max(ours)*1000:.0f} ms |")
    print(f"| baseline `qemu-img create -b` + `virsh create` | {p50b*1000:.0f} ms | {pct(baseline, 90)*1000:.0f} ms | {max(baseline)*1000:.0f} ms |")
    print(f"| **ratio (p50)** | **{p50o/p50b:.2f}×** | | |")


if __name__ == "__main__":
    main()
