#!/usr/bin/env python3
"""Turns one guest's raw results (tests/vm/guest.sh and tests/vm/checks/*.sh
wrote them into OUT_DIR) into OUT_DIR/result.json and one table row on stdout.

    summarize.py KERNEL OUT_DIR BOOT_STATUS
    summarize.py --header          the table's header (two lines)

BOOT_STATUS is what the host saw: "ok", "timeout" or "qemu-exit-N". Exits 0
when the row is green (or a documented refusal), 1 when not.
Every value comes from a file the guest wrote; a missing file is a failure.
A column is one function in COLUMNS: it takes the out directory, records
its raw values in the result dict and returns (cell text, green).
"""
import json
import os
import re
import sys

import tree  # tests/vm/tree.py

# The one line a policy prints when it refuses to start on this kernel (a
# floor of its [kernel] table): a documented outcome, not a failure.
REFUSAL = re.compile(r"Landlock ABI \d+, below the policy's kernel\.landlock_abi = \d+|lacks [^(]+\([^)]+\), which the policy requires")
WHO = ("user", "root")


def read(out, name):
    try:
        with open(os.path.join(out, name), encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def load_json(out, name):
    try:
        return json.loads(read(out, name) or "null")
    except ValueError:
        return None


def both(cells):
    """One cell for user and root: the text once when they agree."""
    u, s = cells["user"], cells["root"]
    return u if u == s else f"user {u} / root {s}"


def blocks(text):
    """{label: [lines]} of a container's output, "@label" starting each."""
    r, cur = {}, None
    for line in (text or "").splitlines():
        if line.startswith("@"):
            cur = line[1:].strip()
            r[cur] = []
        elif cur is not None:
            r[cur].append(line)
    return r


def col_release(out, r):
    r["release"] = (read(out, "uname") or "?").strip()
    return r["release"], r["release"] != "?"


def col_cgroup(out, r):
    fs = (read(out, "cgroup-fs") or "").strip()
    r["cgroup_fs"] = fs
    hier = {"cgroup2fs": "v2 unified", "tmpfs": "v1/hybrid"}.get(fs, fs or "?")
    mech = {}
    for who in WHO:
        rep = load_json(out, f"report-{who}.json")
        try:
            mech[who] = rep["limits_mechanism"]
            # Why a delegated cgroup was not used, when pinfold says (the
            # errno text after the last colon of its set-up error).
            m = re.search(r"cgroup set-up failed: .*: ([^:()]+) \(os error", rep.get("limits_detail") or "")
            if m:
                mech[who] += f" (cgroup set-up failed: {m.group(1)})"
        except (KeyError, TypeError):
            mech[who] = "?"
    r["limits_mechanism"] = mech
    # Root runs in a delegated scope of its own: cgroup v2 must be used.
    return f"{hier}; limits user={mech['user']} root={mech['root']}", fs == "cgroup2fs" and mech["root"] == "cgroup-v2"


def col_landlock(out, r):
    ll = "?"
    doc = load_json(out, "doctor-user.json") or []
    try:
        d = next(c for c in doc if c["name"] == "landlock")
        m = re.search(r"ABI (\d+)", d["detail"])
        ll = m.group(1) if m else d["detail"][:40]
        r["doctor_user"] = doc
    except (StopIteration, KeyError, TypeError):
        pass
    r["landlock_abi"] = ll
    return ll, ll != "?"


def probes(out, policy, who):
    """{"holes": [...], "refused_line": str|None, "ok": bool, "text": cell}"""
    txt, err, rc = (read(out, f"probes-{policy}-{who}{s}") for s in (".txt", ".err", ".rc"))
    if txt is None or rc is None:
        return {"ok": False, "text": "no result"}
    if "PROBES-DONE" in txt:
        holes = [l.split(":")[0] for l in txt.splitlines() if l.endswith(": ALLOWED")]
        # What the policy runs without here, from doctor (as exec decides
        # it; the kernel's, so the user's doctor serves both rounds).
        doc = load_json(out, "doctor-user.json") or []
        line = next((c["detail"] for c in doc if c["name"] == f"policy {policy}"), "")
        deg = re.findall(r"(?:^runs degraded: |; )(\w+) \(needs", line)
        text = "0 holes" if not holes else f"{len(holes)} HOLES: {' '.join(holes)}"
        return {"holes": holes, "ok": not holes, "degraded": deg,
                "text": f"{text} (degraded: {', '.join(deg)})" if deg else text}
    lines = [l for l in (err or "").splitlines() if l.strip()]
    refusal = [l for l in lines if REFUSAL.search(l)]
    first = (refusal or lines or [f"exit {rc.strip()}"])[0]
    documented = rc.strip() != "0" and bool(refusal)
    return {"refused_line": first, "ok": documented,
            "text": f"refused: {REFUSAL.search(first).group(0)}" if documented else f"FAILED: {first[:90]}"}


def col_probes(policy):
    def col(out, r):
        per = {who: probes(out, policy, who) for who in WHO}
        r[f"probes_{policy}"] = per
        return both({w: p["text"] for w, p in per.items()}), all(p["ok"] for p in per.values())
    return col


# Each bomb: the limit --report must name, as the cell shows it.
BOMBS = {"mem": "memory", "memfd": "memory", "pids": "pids", "cpu": "cpu_time", "disk": "tmp"}


# Root's own: the memory tricks cgroup v2 charges (checks/40-bombs.sh).
ROOT_BOMBS = {"shanon": "memory", "memfdmap": "memory", "devshm": "memory"}


def col_bombs(out, r):
    """Each bomb ended by its limit; root's (a delegated scope) by cgroup v2."""
    res, bad, mechs = {}, [], {}
    for who in WHO:
        bombs = dict(BOMBS, **(ROOT_BOMBS if who == "root" else {}))
        for name, want in bombs.items():
            rep = load_json(out, f"bomb-{name}-{who}.json") or {}
            rc = (read(out, f"bomb-{name}-{who}.rc") or "?").strip()
            got, mech = rep.get("limit"), rep.get("limits_mechanism") or "?"
            res[f"{name}-{who}"] = {"rc": rc, "limit": got, "outcome": rep.get("outcome"),
                                    "mechanism": mech, "reason": rep.get("reason")}
            mechs.setdefault(who, set()).add(mech)
            if rc != "123" or got != want:
                bad.append(f"{name} NOT stopped by {want} as {who} (exit {rc}, limit {got})")
            elif who == "root" and mech != "cgroup-v2":
                bad.append(f"{name} stopped as root by {mech}, not cgroup-v2")
    r["bombs"] = res
    mech = {w: "/".join(sorted(m)) for w, m in mechs.items()}
    how = both(mech)
    if bad:
        return "; ".join(bad) + f" ({how})", False
    return f"{'/'.join(BOMBS)} (+ root {'/'.join(ROOT_BOMBS)}) killed ({how})", True


def col_whiteout(out, r):
    """"match", or the first paths where the tree inside exec --image differs
    from umoci's unpack of the same image (tests/vm/tree.py), or why there
    is no listing. run.sh names umoci's tree in PINFOLD_VM_WHITEOUT_ROOTFS."""
    wo = {}
    rootfs = os.environ.get("PINFOLD_VM_WHITEOUT_ROOTFS")
    for who in WHO:
        t = read(out, f"whiteout-{who}.txt")
        rc = (read(out, f"whiteout-{who}.rc") or "?").strip()
        if t is not None and rc == "0" and rootfs:
            wo[who] = tree.compare(t, rootfs)[1]
        else:
            err = (read(out, f"whiteout-{who}.err") or "").strip().splitlines()
            wo[who] = f"FAILED rc={rc}: {err[-1][:60] if err else ''}"
    r["whiteout"] = wo
    return both(wo), all(v == "match" for v in wo.values())


def network_mode(out, mode):
    """None when the mode behaved as README "Network modes" says, else why not."""
    txt, err = read(out, f"network-{mode}.txt"), read(out, f"network-{mode}.err") or ""
    rc = (read(out, f"network-{mode}.rc") or "?").strip()
    if txt is None or rc != "0":
        last = err.strip().splitlines()[-1][:70] if err.strip() else ""
        return f"exit {rc}: {last}"
    b = blocks(txt)
    first = {k: (v[0] if v else "(missing)") for k, v in b.items()}
    eacces, own_lo = "connect: refused (errno EACCES)", "connect: refused (errno ECONNREFUSED)"
    if mode == "none":
        if first.get("interfaces", "").split() != ["lo"]:
            return f"interfaces {first.get('interfaces')!r}, not lo alone"
        if first.get("loopback") != own_lo:
            return f"127.0.0.1:8080 {first.get('loopback')} (the guest's listener)"
        for k in ("own", "outside"):
            if not first.get(k, "").startswith("connect: refused"):
                return f"{k}: {first.get(k)}"
    elif mode == "allowlist":
        allowed, unlisted = "\n".join(b.get("allowed", [])), "\n".join(b.get("unlisted", []))
        if first.get("proxy") != "http://127.0.0.1:3128":
            return f"http_proxy {first.get('proxy')!r}"
        if "marker lo-allowed" not in allowed or "rc=0" not in allowed:
            return "the allowed 127.0.0.1:8080 not reached through the proxy"
        if "marker lo-unlisted" in unlisted or "rc=0" in unlisted:
            return "the unlisted 127.0.0.1:8081 was reached"
        if "network allowlist: refused 127.0.0.1:8081" not in err:
            return "no refusal line for 127.0.0.1:8081"
        # loopback_tcp = false is a Landlock TCP rule (ABI >= 4): below,
        # the direct connect reaches the container's own empty loopback.
        # Shown in the cell, not failed: a degradation issue 15 §3 decides.
        if first.get("direct") == own_lo:
            return "ok, but loopback_tcp = false not enforced (no Landlock TCP rules)"
        if first.get("direct") != eacces:
            return f"direct connect: {first.get('direct')}"
    elif mode == "egress":
        if "marker outside" not in "\n".join(b.get("outside", [])):
            return "192.0.43.80:8080 (routed public address) not reached"
        # The veth's address is the container's own too (pasta copies
        # it): refused there as a local port nobody listens on.
        if first.get("own-copied") not in (eacces, own_lo):
            return f"own-copied: {first.get('own-copied')}"
        for k in ("gateway", "own-other"):
            if first.get(k) != eacces:
                return f"{k}: {first.get(k)}"
        if first.get("loopback") != own_lo:
            return f"loopback: {first.get('loopback')}"
    return None


def col_network(out, r):
    pre = blocks(read(out, "network-pre.txt"))
    expect = {"127.0.0.1:8080": "marker lo-allowed", "127.0.0.1:8081": "marker lo-unlisted",
              "10.77.0.2:8082": "marker own", "10.78.0.1:8082": "marker own",
              "10.77.0.1:8080": "marker outside",
              "192.0.43.80:8080": "marker outside"}
    missing = [t for t, m in expect.items() if m not in "\n".join(pre.get(t, []))]
    r["network_pre"] = pre
    if missing:
        return f"set-up FAILED: the guest itself does not reach {' '.join(missing)}", False
    why = {m: network_mode(out, m) for m in ("none", "allowlist", "egress")}
    r["network"] = why
    def fine(w):
        return w is None or w.startswith("ok, but")
    return ", ".join(f"{m} ok" if w is None else f"{m} {w}" if fine(w) else f"{m} FAILED ({w})"
                     for m, w in why.items()), all(fine(w) for w in why.values())


def col_run(out, r):
    cells, ok = {}, True
    for who in WHO:
        rc = (read(out, f"run-{who}.rc") or "?").strip()
        summary = load_json(out, f"run-{who}.json") or {}
        arts = read(out, f"run-{who}.artifacts") or ""
        r[f"run_{who}"] = {"rc": rc, "summary": summary, "artifacts": arts}
        if rc == "0" and summary.get("state") == "succeeded" and "built from vm-source" in arts:
            cells[who] = "ok"
        else:
            ok = False
            err = (read(out, f"run-{who}.err") or "").strip().splitlines()
            cells[who] = f"FAILED exit {rc} state {summary.get('state')}: {(summary.get('reason') or (err[-1] if err else ''))[:70]}"
    return both(cells), ok


# The user manager's delegation runc and podman document; `pinfold doctor`
# should print it where delegation is missing or partial (issue 15 §2).
DROPIN = "Delegate=cpu cpuset io memory pids"

# The checks tests/vm/checks/units.sh writes, in order: a missing one (the
# script died before it) is a failure like a FAIL line.
UNIT_CHECKS = ("dpkg-install user subuid-kept subuid-range subgid-kept subgid-range conffiles "
               "units-installed apparmor server-up agent-registered job agent-cgroup "
               "two-jobs-running stop-time stop-result drained cancelled-at-deadline "
               "nothing-left server-stop dpkg-purge").split()


def units(out):
    """The "units/.deb" cell from units/checks.txt: {"ok", "text", "checks"}."""
    skipped = read(out, "units/skipped")
    if skipped is not None:
        return {"ok": True, "text": f"skipped: {skipped.strip()}", "checks": {}}
    txt = read(out, "units/checks.txt")
    if txt is None:
        return {"ok": False, "text": "no result", "checks": {}}
    checks = {}
    for line in txt.splitlines():
        status, _, rest = line.partition(" ")
        name, _, detail = rest.partition(": ")
        checks[name] = {"ok": status == "ok", "detail": detail}
    bad = [n for n in UNIT_CHECKS if not checks.get(n, {}).get("ok")]
    stop = re.search(r"stop took ([\d.]+) s", checks.get("stop-time", {}).get("detail", ""))
    stop = f"stop {stop.group(1)} s" if stop else "stop ?"
    if bad:
        return {"ok": False, "checks": checks,
                "text": "FAIL " + ", ".join(f"{n} ({checks[n]['detail'][:60]})" if n in checks else f"{n} (not run)"
                                            for n in bad)}
    return {"ok": True, "checks": checks, "text": f"ok: {len(UNIT_CHECKS)} checks, drained, {stop}"}


def session(out):
    """The "user session" cell from session/ (tests/vm/checks/session.sh):
    per delegation of the user manager (stock, partial, dropin), the limits
    mechanism `exec --report` named in a Delegate=yes scope and whether
    `doctor` printed the drop-in. Green when the drop-in gives cgroup v2 and
    doctor names the drop-in where delegation is partial."""
    skipped = read(out, "session/skipped")
    if skipped is not None:
        return {"ok": True, "text": f"skipped: {skipped.strip()}"}
    r = {}
    for mode in ("stock", "partial", "dropin"):
        try:
            mech = json.loads(read(out, f"session/{mode}-report.json") or "null")["limits_mechanism"]
        except (ValueError, KeyError, TypeError):
            err = (read(out, f"session/{mode}-exec.err") or "").strip().splitlines()
            mech = f"no report: {err[-1][:60]}" if err else "no report"
        r[mode] = {"mechanism": mech,
                   "controllers": (read(out, f"session/{mode}-controllers") or "?").split(),
                   "doctor_names_dropin": DROPIN in (read(out, f"session/{mode}-doctor.txt") or "")}
    cells = [f"{m} {v['mechanism']}" for m, v in r.items()]
    cells[1] += f" (doctor {'prints' if r['partial']['doctor_names_dropin'] else 'does NOT print'} the drop-in)"
    r["hundred"] = hundred(read(out, "session/hundred.txt") or "")
    cells.append(r["hundred"]["text"])
    r["ok"] = (r["dropin"]["mechanism"] == "cgroup-v2" and r["partial"]["doctor_names_dropin"]
               and r["hundred"]["ok"])
    r["text"] = ", ".join(cells)
    return r


def hundred(text):
    """hundred.sh's summary: lines `COUNT KIND ok|bad rc=N limit=L
    mechanism=M`, then `left: N ...` and `procs: N`. Green when all 100 runs
    ended as expected under cgroup v2 (the bombs by `memory`) and no cgroup
    or process is left."""
    runs, left, procs, bad = 0, None, None, []
    for line in text.splitlines():
        f = line.split()
        if line.startswith("left:"):
            left = int(f[1])
        elif line.startswith("procs:"):
            procs = int(f[1])
        elif len(f) == 6 and f[0].isdigit():
            n, kind, ok, _rc, limit, mech = f
            runs += int(n)
            if ok != "ok" or mech != "mechanism=cgroup-v2" or (kind == "bomb") != (limit == "limit=memory"):
                bad.append(f"{n} {kind} {ok} {_rc} {limit} {mech}")
    ok = runs == 100 and not bad and left == 0 and procs == 0
    text = (f"100 runs: {left} cgroups and {procs} processes left" if ok
            else f"100 runs FAIL: {runs} runs, left={left}, procs={procs}, {'; '.join(bad)[:120]}")
    return {"ok": ok, "runs": runs, "left": left, "procs": procs, "bad": bad, "text": text}


def col_units(out, r):
    un = units(out)
    r["units"] = un
    return un["text"], un["ok"]


def col_session(out, r):
    se = session(out)
    r["session"] = se
    return se["text"], se["ok"]


COLUMNS = [
    ("release", col_release),
    ("cgroup", col_cgroup),
    ("Landlock ABI", col_landlock),
    ("probe holes, default", col_probes("default")),
    ("probe holes, untrusted", col_probes("untrusted")),
    ("bombs (limit hit, mechanism)", col_bombs),
    ("whiteout image", col_whiteout),
    ("network", col_network),
    ("pinfold run", col_run),
    ("units/.deb", col_units),
    ("user session", col_session),
]


def main():
    if sys.argv[1:] == ["--header"]:
        names = ["kernel package"] + [n for n, _ in COLUMNS] + ["guest s", "result"]
        print("| " + " | ".join(names) + " |")
        print("|" + "---|" * len(names))
        return 0
    kernel, out, boot = sys.argv[1:4]
    r = {"kernel": kernel, "boot": boot}
    done = read(out, "done") is not None
    cells, ok = [], done and boot == "ok"
    for _, col in COLUMNS:
        text, green = col(out, r)
        cells.append(text)
        ok = ok and green
    names = sorted(os.listdir(out)) if os.path.isdir(out) else []
    times = {f[5:]: (read(out, f) or "?").strip() for f in names if f.startswith("time-")}
    r["check_seconds"] = times
    r["green"] = ok
    with open(os.path.join(out, "result.json"), "w", encoding="utf-8") as f:
        json.dump(r, f, indent=2)
    if not done:
        why = "timed out" if boot == "timeout" else f"did not finish (boot {boot})"
        cells = [r["release"], f"FAILED: guest {why}; see {out}/console.log"] + [""] * (len(COLUMNS) - 2)
    timing = " ".join(f"{k} {v}" for k, v in times.items())
    print(f"| {kernel} | " + " | ".join(cells) + f" | {timing} | {'ok' if ok else 'FAIL'} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
