"""Faults injected into a running deployment, each for 10, 30 and 90 seconds (run by outages.sh).

A deployment on loopback: `dn serve --workers 0` and one `dn worker` (production leases: 60 s, heartbeat
10 s, 3 retries) on a throwaway PostgreSQL, moto's S3 behind a TCP proxy this script can cut, and a worker
scratch directory on a small tmpfs this script can fill. For each fault and length: a job of the test model
is submitted, the fault starts once it has trained a few steps, ends after the length, and the job is
followed to its end. Printed and written as JSON: the job's outcome, the attempts it took, the retries it
spent, the attempts given back without spending one, and the steps trained more than once.

Faults:
  database  PostgreSQL stopped (pg_ctl stop -m fast), started again after the length
  storage   S3 refusing connections (the proxy closed, open connections dropped)
  disk      the worker's scratch filesystem full (a file fills the tmpfs)
  server    `dn serve` killed with SIGKILL, started again after the length
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Proxy:
    """A TCP forwarder to `target` that can refuse connections (`cut`) and accept them again (`mend`)."""

    def __init__(self, target_port):
        self.target = target_port
        self.port = free_port()
        self.conns = []
        self.lock = threading.Lock()
        self.listener = None
        self.mend()

    def mend(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self):
        # shutdown wakes the thread blocked in accept(), so that the port is free to bind again.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self.conns.clear()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Deployment:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        self.proxy = Proxy(int(args.s3_endpoint.rsplit(":", 1)[1]))
        self.listen = f"127.0.0.1:{free_port()}"
        self.url = f"http://{self.listen}"
        self.scratch = os.path.join(self.work, "scratch")
        os.makedirs(self.scratch, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", self.scratch], check=True)
        self.env = dict(os.environ)
        self.env.update({
            "DN_DATABASE_URL": args.pg_url,
            "DN_S3_BUCKET": args.s3_bucket,
            "DN_S3_ENDPOINT": f"http://127.0.0.1:{self.proxy.port}",
            "DN_S3_REGION": "us-east-1",
            "DN_S3_ALLOW_HTTP": "true",
            "HOME": self.work,
        })
        self.server = None
        self.start_server()
        self.key = subprocess.run([args.dn, "keys", "create", "--org", "acme"], env=self.env,
                                  check=True, capture_output=True, text=True).stdout.strip()
        self.worker = subprocess.Popen(
            [args.dn, "worker", "--worker-id", "chaos-0", "--device", "cpu", "--data-dir", self.scratch],
            env=self.env, stdin=subprocess.DEVNULL, stdout=open(os.path.join(self.work, "worker.log"), "ab"),
            stderr=subprocess.STDOUT)
        for kind, path in (("capability", "capabilities/support-agent"), ("dataset", "datasets/support-demos")):
            self.dn(kind, "push", os.path.join(args.examples, path))

    def start_server(self):
        self.server = subprocess.Popen(
            [self.args.dn, "serve", "--listen", self.listen, "--workers", "0",
             "--data-dir", os.path.join(self.work, "serve")],
            env=self.env, stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(self.work, "serve.log"), "ab"), stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2)
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        sys.exit("dn serve did not start")

    def dn(self, *args):
        env = dict(self.env, DN_SERVER=self.url, DN_API_KEY=self.key, DN_ORGANIZATION="acme",
                   DN_WORKSPACE="main")
        out = subprocess.run([self.args.dn, *args], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"dn {' '.join(args)}: {out.stderr}")
        return out.stdout

    def get(self, path):
        request = urllib.request.Request(f"{self.url}/api/v1/org/acme/ws/main/training/jobs{path}",
                                         headers={"X-API-Key": self.key})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def job(self, job_id):
        try:
            return self.get(f"/{job_id}")
        except (urllib.error.URLError, OSError, ValueError):
            return None  # the server is down (the server fault) or not ready

    def submit(self):
        out = self.dn("train", "sft", "--model", self.args.model, "--capability", "support-agent@1.0.0",
                      "--dataset", "support-demos@0.1.0", "--batch-size", "2", "--lora-rank", "4",
                      "--max-sequence-length", "64", "--steps", str(self.args.steps),
                      "--checkpoint-interval", "25", "--json")
        return json.loads(out)["id"]

    def close(self):
        for p in (self.worker, self.server):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.proxy.cut()
        subprocess.run(["umount", self.scratch], check=False)


def steps_of(job):
    return (job or {}).get("metrics", {}).get("steps", [])


def inject(d, fault, length):
    """Starts `fault`, waits `length` seconds, ends it."""
    lib = os.path.join(d.args.root, "scripts/lib/postgres.sh")
    if fault == "database":
        subprocess.run(["bash", "-c", f'source "{lib}" && pg_halt "{d.args.pg_dir}"'], check=True)
        time.sleep(length)
        subprocess.run(["bash", "-c", f'source "{lib}" && pg_resume "{d.args.pg_dir}"'], check=True)
    elif fault == "storage":
        d.proxy.cut()
        time.sleep(length)
        d.proxy.mend()
    elif fault == "disk":
        filler = os.path.join(d.scratch, "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "status=none"], check=False)
        time.sleep(length)
        os.remove(filler)
    elif fault == "server":
        d.server.kill()
        d.server.wait()
        time.sleep(length)
        d.start_server()


def scenario(d, fault, length):
    job_id = d.submit()
    started = time.time()
    while len(steps_of(d.job(job_id))) < 5:
        if time.time() - started > 600:
            raise RuntimeError(f"{fault} {length}s: the job never started training")
        time.sleep(0.5)
    at_step = len(steps_of(d.job(job_id)))
    inject(d, fault, length)
    deadline = time.time() + 1800
    while True:
        job = d.job(job_id)
        if job and job["status"] in ("completed", "failed", "cancelled"):
            break
        if time.time() > deadline:
            raise RuntimeError(f"{fault} {length}s: the job did not end")
        time.sleep(1)
    logs, after = [], 0
    while True:
        page = d.get(f"/{job_id}/logs?after={after}")["items"]
        if not page:
            break
        logs += page
        after = page[-1]["data"]["seq"]
    messages = [entry["message"] for entry in logs]
    step_events = [e for e in logs if e.get("data", {}).get("event") == "step_complete"]
    unique = {e["data"]["step"] for e in step_events}
    return {
        "fault": fault,
        "length_s": length,
        "fault_at_step": at_step,
        "outcome": job["status"],
        "error": job.get("error"),
        "attempts": job.get("attempt"),
        "retries_spent": sum(("; retry " in m) or ("one retry spent" in m) or ("retries spent" in m)
                             for m in messages),
        "released_without_retry": sum("no retry spent" in m for m in messages),
        "steps_redone": len(step_events) - len(unique),
        "job_seconds": round(time.time() - started, 1),
    }


def main():
    p = argparse.ArgumentParser()
    for flag in ("--dn", "--model", "--work", "--pg-url", "--pg-dir", "--s3-endpoint", "--s3-bucket",
                 "--examples", "--root", "--out"):
        p.add_argument(flag, required=True)
    p.add_argument("--faults", default="database,storage,disk,server")
    p.add_argument("--lengths", default="10,30,90")
    p.add_argument("--steps", type=int, default=150)
    args = p.parse_args()
    faults = args.faults.split(",")
    # Figures of faults not run this time are kept (a run may redo some faults only).
    results = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = [r for r in json.load(f) if r["fault"] not in faults]
    d = Deployment(args)
    try:
        for fault in faults:
            for length in map(int, args.lengths.split(",")):
                result = scenario(d, fault, length)
                print(json.dumps(result), flush=True)
                results.append(result)
                with open(args.out, "w") as f:
                    json.dump(results, f, indent=1)
    finally:
        d.close()
    print(f"{'fault':<9} {'length':>6} {'outcome':<10} {'attempts':>8} {'retries':>7} {'released':>8} "
          f"{'redone':>6}")
    for r in results:
        print(f"{r['fault']:<9} {r['length_s']:>5}s {r['outcome']:<10} {r['attempts']:>8} "
              f"{r['retries_spent']:>7} {r['released_without_retry']:>8} {r['steps_redone']:>6}")


if __name__ == "__main__":
    main()
