#!/usr/bin/env python3
"""`verify: 2` on the coordinator against a single run of the same job.

    sudo python3 bench/verify.py [PINFOLD] [RUNS] [light]

Starts `pinfold server` (root) and two `pinfold agent`s (as pinfold-test when
run as root) on 127.0.0.1 with a busybox image built by
tests/make-busybox-image.sh. Each round submits the same build (a gzip -n of
a generated file, two artifacts) once as a plain job and once with
`verify: 2`, alternating which goes first, and times submit -> terminal state
from the client (polling every 10 ms). Both include the agent's provenance
(sign + upload); the verify job also includes the comparison. The two runs
of a verify job go to the two agents in parallel, so the target is
"no more than one run + 5%" here, N times one run only on one machine.
With `light` the build is `echo`s only, which leaves the coordination
(dispatch, upload, provenance, settling) instead of CPU contention.
Reports medians. Never asserts timings.
"""
import json, os, statistics, subprocess, sys, time

sys.dont_write_bytecode = True
from lib import get, make_work, start_agent, start_server, submit

RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 10

work, image, as_user = make_work("pinfold-verify-bench-", ["a1", "a2"])
server, url = start_server(work, 19000 + os.getpid() % 1000)
agents = [start_agent(work, as_user, url, a, a) for a in ("a1", "a2")]

LIGHT = len(sys.argv) > 3 and sys.argv[3] == "light"
STEPS = ("  - name: build\n    run: mkdir -p out; echo a > out/list; echo b > out/list.gz\n" if LIGHT else
         "  - name: build\n    run: mkdir -p out; seq 1 300000 > out/list; gzip -n -9 -c out/list > out/list.gz\n")


def run(verify):
    extra = "verify: 2\n" if verify else ""
    spec = f"image: {image}\n{extra}artifacts: [out/list, out/list.gz]\nsteps:\n{STEPS}"
    t0 = time.monotonic()
    job = submit(url, spec)
    while True:
        j = json.loads(get(url, f"/api/v1/jobs/{job}"))
        if j["state"] not in ("queued", "running"):
            break
        time.sleep(0.01)
    dt = time.monotonic() - t0
    assert j["state"] == "succeeded", j
    if verify:
        assert j["verify"]["verdict"]["reproducible"], j
    return dt


try:
    run(True)  # warm-up: both agents import the image
    single, double = [], []
    for i in range(RUNS):
        order = [(False, single), (True, double)]
        for verify, out in (order if i % 2 == 0 else order[::-1]):
            out.append(run(verify))
    s, d = statistics.median(single), statistics.median(double)
    print(f"{'light' if LIGHT else 'gzip'} build: plain job: median {s*1000:.0f} ms; verify: 2 on two agents: median {d*1000:.0f} ms; "
          f"ratio {d/s:.2f} ({RUNS} rounds, load average {os.getloadavg()[0]:.1f})")
finally:
    for a in agents:
        a.terminate(); a.wait()
    server.terminate(); server.wait()
    subprocess.run(["rm", "-rf", work])
