#!/usr/bin/env python3
"""Failover time: two `pinfold server --store postgres://...` on one
PostgreSQL database (a cluster of this script's own, started with initdb as
pinfold-test on a free port), Debian's haproxy in front, and one simulated
runner leasing and finishing no-op jobs through haproxy as fast as it can
(a submitter keeps the queue full). Each round kills one coordinator with SIGKILL mid-stream and measures, from
the kill, the time to the next successful lease (through the other: haproxy
redispatches what the dead one cannot take) and the longest gap between
two successful leases around it; then starts the killed one again.

    sudo python3 bench/failover.py [PINFOLD] [ROUNDS]

PINFOLD: the binary (default: the release build). Medians are printed last.
"""
import glob, json, os, signal, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.request, urllib.error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN, REG = "pfa_bench_admin", "pfg_bench_registration"
SPEC = "image: busybox@sha256:" + "0" * 64 + "\nsteps:\n  - name: noop\n    run: 'true'\n"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def call(url, path, token, body=None, method="POST"):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        if r.headers.get("content-type", "").startswith("application/json"):
            return r.status, json.loads(raw)
        return r.status, raw


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release/pinfold")
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    work = tempfile.mkdtemp(prefix="pinfold-bench-failover-", dir="/tmp")
    os.chmod(work, 0o755)
    as_user = ["setpriv", "--reuid=pinfold-test", "--regid=pinfold-test", "--init-groups"] if os.geteuid() == 0 else []
    pgbin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    procs = []
    try:
        # PostgreSQL: a cluster of our own, synchronous_commit off (the
        # durability class of the SQLite store's synchronous=NORMAL).
        os.makedirs(f"{work}/pg")
        if as_user:
            subprocess.run(["chown", "-R", "pinfold-test:", work], check=True)
        subprocess.run(as_user + [f"{pgbin}/initdb", "-D", f"{work}/pg/data", "-U", "pinfold", "-A", "trust",
                                  "--no-sync"], check=True, stdout=subprocess.DEVNULL)
        pgport = free_port()
        procs.append(subprocess.Popen(as_user + [f"{pgbin}/postgres", "-D", f"{work}/pg/data", "-p", str(pgport),
                                                 "-k", f"{work}/pg", "-c", "listen_addresses=127.0.0.1",
                                                 "-c", "synchronous_commit=off"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while subprocess.run([f"{pgbin}/pg_isready", "-h", "127.0.0.1", "-p", str(pgport)],
                             stdout=subprocess.DEVNULL).returncode != 0:
            time.sleep(0.05)
        subprocess.run([f"{pgbin}/psql", "-h", "127.0.0.1", "-p", str(pgport), "-U", "pinfold", "-d", "postgres",
                        "-c", "CREATE DATABASE bench"], check=True, stdout=subprocess.DEVNULL)
        store = f"postgres://pinfold@127.0.0.1:{pgport}/bench"
        ports = [free_port(), free_port()]
        env = dict(os.environ, PINFOLD_ADMIN_TOKEN=ADMIN, PINFOLD_REGISTRATION_TOKEN=REG, RUST_LOG="error")

        def coordinator(i):
            home = f"{work}/home{i}"
            os.makedirs(home, exist_ok=True)
            p = subprocess.Popen([binary, "server", "--store", store, "--listen", f"127.0.0.1:{ports[i]}"],
                                 env=dict(env, PINFOLD_HOME=home), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True)
            for line in p.stdout:
                if "listening on" in line:
                    break
            threading.Thread(target=p.stdout.read, daemon=True).start()
            return p

        servers = [coordinator(0), coordinator(1)]
        hport = free_port()
        cfg = (f"global\n  maxconn 1000\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 90s\n"
               f"  timeout server 90s\n  timeout check 5s\n  retries 3\n  option redispatch 1\n"
               f"  retry-on conn-failure empty-response response-timeout\n  option http-buffer-request\n"
               f"frontend front\n  bind 127.0.0.1:{hport}\n  default_backend coordinators\n"
               f"backend coordinators\n  balance roundrobin\n  option httpchk GET /healthz\n")
        for i, p in enumerate(ports):
            cfg += f"  server c{i} 127.0.0.1:{p} check inter 200ms fall 2 rise 2\n"
        with open(f"{work}/haproxy.cfg", "w") as f:
            f.write(cfg)
        procs.append(subprocess.Popen(["haproxy", "-db", "-f", f"{work}/haproxy.cfg"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        lb = f"http://127.0.0.1:{hport}"
        deadline = time.monotonic() + 30
        while True:
            try:
                call(lb, "/healthz", "", method="GET")
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        _, r = call(lb, "/api/v1/runners", REG, {"name": "bench", "labels": []})
        runner = r["token"]
        for _ in range(2000):
            call(lb, "/api/v1/jobs", ADMIN, {"spec": SPEC})
        leases = []  # monotonic times of successful leases
        stop = threading.Event()

        def feed():
            # Keeps the queue from running dry: a submit per lease or so.
            while not stop.is_set():
                try:
                    call(lb, "/api/v1/jobs", ADMIN, {"spec": SPEC})
                except (urllib.error.URLError, OSError, ValueError):
                    time.sleep(0.01)

        threading.Thread(target=feed, daemon=True).start()

        def run():
            while not stop.is_set():
                try:
                    status, lease = call(lb, "/api/v1/runner/lease", runner, {"wait_secs": 0})
                    if status != 200:
                        continue
                    leases.append(time.monotonic())
                    call(lb, f"/api/v1/jobs/{lease['job_id']}/finish", lease["job_token"],
                         {"state": "succeeded", "steps": []})
                except (urllib.error.URLError, OSError, ValueError, KeyError):
                    time.sleep(0.01)

        threading.Thread(target=run, daemon=True).start()
        firsts, gaps = [], []
        for i in range(rounds):
            time.sleep(1.0)
            victim = i % 2
            killed = time.monotonic()
            servers[victim].send_signal(signal.SIGKILL)
            servers[victim].wait()
            time.sleep(1.5)
            after = [t for t in leases if t > killed]
            around = [t for t in leases if killed - 1.0 < t < killed + 1.5]
            first = (after[0] - killed) * 1000 if after else float("inf")
            gap = max((b - a for a, b in zip(around, around[1:])), default=float("inf")) * 1000
            firsts.append(first)
            gaps.append(gap)
            print(f"round {i}: coordinator {victim} killed; next lease after {first:.1f} ms, "
                  f"longest gap between leases {gap:.1f} ms")
            servers[victim] = coordinator(victim)
            time.sleep(1.0)  # haproxy's checks take it back (rise 2 x 200 ms)
        stop.set()
        print(f"failover median: next lease {statistics.median(firsts):.1f} ms after the kill, "
              f"longest gap {statistics.median(gaps):.1f} ms ({rounds} kills)")
        for s in servers:
            s.kill()
    finally:
        for p in procs:
            p.kill()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
