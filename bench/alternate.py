#!/usr/bin/env python3
"""Runs commands round-robin (a random order in each round) and reports the
median wall time of each, with its ratio to the first command.

On a shared, busy machine, running all samples of one command and then all of
the next (as hyperfine does) lets load changes between the blocks decide the
comparison; interleaving makes every command see the same load.

    alternate.py RUNS WARMUP JSON_OUT NAME=CMD [NAME=CMD]...

CMD is split on spaces (no shell, so no shell start-up is measured); a word
N<PATH opens PATH read-only as the command's fd N (bwrap --seccomp N). Every
run must exit 0; a failure stops the benchmark with the command's stderr.
With ALTERNATE_PREPARE set, that shell command runs (untimed) before every
run, as hyperfine's --prepare.
"""
import json
import os
import random
import statistics
import subprocess
import sys
import time


def split(cmd):
    """argv and the fds to open for it (N<PATH words)."""
    argv, opens = [], []
    for w in cmd.split():
        n, sep, path = w.partition("<")
        if sep and n.isdigit():
            opens.append((os.POSIX_SPAWN_OPEN, int(n), path, os.O_RDONLY, 0))
        else:
            argv.append(w)
    return argv, opens


def run_once(cmd):
    argv, opens = cmd
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        t = time.perf_counter_ns()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 1), *opens,
        ])
        _, status, ru = os.wait4(pid, 0)
        elapsed = time.perf_counter_ns() - t
    finally:
        os.close(devnull)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err = subprocess.run(argv, capture_output=True, text=True).stderr
        sys.exit(f"{' '.join(argv)} exited {code}: {err.strip()}")
    return elapsed / 1e6, (ru.ru_utime + ru.ru_stime) * 1e3


def main():
    runs, warmup, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    cmds = []
    for spec in sys.argv[4:]:
        name, cmd = spec.split("=", 1)
        cmds.append((name, split(cmd)))
    prepare = os.environ.get("ALTERNATE_PREPARE")
    wall = {n: [] for n, _ in cmds}
    cpu = {n: [] for n, _ in cmds}
    for i in range(warmup + runs):
        order = list(cmds)
        random.shuffle(order)
        for name, argv in order:
            if prepare:
                subprocess.run(prepare, shell=True, check=True)
            w, c = run_once(argv)
            if i >= warmup:
                wall[name].append(w)
                cpu[name].append(c)
    base = statistics.median(wall[cmds[0][0]])
    result = []
    print(f"{'command':34} {'median':>9} {'p25':>8} {'p75':>8} {'ratio':>7}")
    for name, (argv, _) in cmds:
        q = statistics.quantiles(wall[name], n=4)
        med = statistics.median(wall[name])
        print(f"{name:34} {med:7.2f}ms {q[0]:6.2f}ms {q[2]:6.2f}ms {med / base:6.2f}x")
        result.append({"name": name, "command": " ".join(argv), "median_ms": med,
                       "p25_ms": q[0], "p75_ms": q[2], "ratio": med / base,
                       "runs": len(wall[name]), "wall_ms": wall[name],
                       "cpu_ms": cpu[name]})
    with open(out, "w") as f:
        json.dump({"runs": runs, "warmup": warmup, "results": result}, f, indent=1)


if __name__ == "__main__":
    main()
