#!/usr/bin/env python3
"""Turns one guest's raw results (tests/vm/guest.sh wrote them into OUT_DIR)
into OUT_DIR/result.json and one table row on stdout.

    summarize.py KERNEL OUT_DIR BOOT_STATUS

BOOT_STATUS is what the host saw: "ok", "timeout" or "qemu-exit-N". Exits 0
when the row is green (or a documented refusal), 1 when not.
Every value comes from a file the guest wrote; a missing file is a failure.
"""
import json
import os
import re
import sys

# The one line a policy prints when it refuses to start on this kernel (its
# landlock.min_abi is above the kernel's): a documented outcome, not a failure.
REFUSAL = re.compile(r"Landlock ABI is \d+, below the policy's minimum \d+")


def read(out, name):
    try:
        with open(os.path.join(out, name), encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def probes(out, policy, who):
    """{"holes": [...], "refused_line": str|None, "ok": bool, "text": cell}"""
    txt, err, rc = (read(out, f"probes-{policy}-{who}{s}") for s in (".txt", ".err", ".rc"))
    if txt is None or rc is None:
        return {"ok": False, "text": "no result"}
    if "PROBES-DONE" in txt:
        holes = [l.split(":")[0] for l in txt.splitlines() if l.endswith(": ALLOWED")]
        return {"holes": holes, "ok": not holes,
                "text": "0 holes" if not holes else f"{len(holes)} HOLES: {' '.join(holes)}"}
    lines = [l for l in (err or "").splitlines() if l.strip()]
    refusal = [l for l in lines if REFUSAL.search(l)]
    first = (refusal or lines or [f"exit {rc.strip()}"])[0]
    documented = rc.strip() != "0" and bool(refusal)
    return {"refused_line": first, "ok": documented,
            "text": f"refused: {REFUSAL.search(first).group(0)}" if documented else f"FAILED: {first[:90]}"}


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
    r["ok"] = r["dropin"]["mechanism"] == "cgroup-v2" and r["partial"]["doctor_names_dropin"]
    r["text"] = ", ".join(cells)
    return r


def main():
    kernel, out, boot = sys.argv[1:4]
    r = {"kernel": kernel, "boot": boot}
    done = read(out, "done") is not None
    r["release"] = (read(out, "uname") or "?").strip()
    fs = (read(out, "cgroup-fs") or "").strip()
    r["cgroup_fs"] = fs
    hier = {"cgroup2fs": "v2 unified", "tmpfs": "v1/hybrid"}.get(fs, fs or "?")
    ll = "?"
    try:
        doc = json.loads(read(out, "doctor-user.json") or "null") or []
        d = next(c for c in doc if c["name"] == "landlock")
        m = re.search(r"ABI (\d+)", d["detail"])
        ll = m.group(1) if m else d["detail"][:40]
        r["doctor_user"] = doc
    except (ValueError, StopIteration, KeyError, TypeError):
        pass
    r["landlock_abi"] = ll
    mech = {}
    for who in ("user", "root"):
        try:
            rep = json.loads(read(out, f"report-{who}.json") or "null")
            mech[who] = rep["limits_mechanism"]
            # Why a delegated cgroup was not used, when pinfold says (the
            # errno text after the last colon of its set-up error).
            m = re.search(r"cgroup set-up failed: .*: ([^:()]+) \(os error", rep.get("limits_detail") or "")
            if m:
                mech[who] += f" (cgroup set-up failed: {m.group(1)})"
        except (ValueError, KeyError, TypeError):
            mech[who] = "?"
    r["limits_mechanism"] = mech
    cells, ok = {}, done and boot == "ok" and fs == "cgroup2fs"
    for pol in ("default", "untrusted"):
        per = {who: probes(out, pol, who) for who in ("user", "root")}
        r[f"probes_{pol}"] = per
        ok = ok and all(p["ok"] for p in per.values())
        u, s = per["user"]["text"], per["root"]["text"]
        cells[pol] = u if u == s else f"user {u} / root {s}"
    wo = {}
    for who in ("user", "root"):
        t = read(out, f"whiteout-{who}.txt") or ""
        rc = (read(out, f"whiteout-{who}.rc") or "?").strip()
        if "yes-gone" in t and "cat-present" in t:
            wo[who] = "match"
        elif "yes-present" in t:
            wo[who] = "MISMATCH (/bin/yes came back)"
        else:
            err = (read(out, f"whiteout-{who}.err") or "").strip().splitlines()
            wo[who] = f"FAILED rc={rc}: {err[-1][:60] if err else ''}"
    r["whiteout"] = wo
    ok = ok and all(v == "match" for v in wo.values())
    wcell = wo["user"] if wo["user"] == wo["root"] else f"user {wo['user']} / root {wo['root']}"
    un, se = units(out), session(out)
    r["units"], r["session"] = un, se
    ok = ok and un["ok"] and se["ok"]
    r["green"] = ok
    with open(os.path.join(out, "result.json"), "w", encoding="utf-8") as f:
        json.dump(r, f, indent=2)
    if not done:
        why = "timed out" if boot == "timeout" else f"did not finish (boot {boot})"
        print(f"| {kernel} | {r['release']} | FAILED: guest {why}; see {out}/console.log | | | | | | | FAIL |")
        return 1
    print(f"| {kernel} | {r['release']} | {hier}; limits user={mech['user']} root={mech['root']} "
          f"| {ll} | {cells['default']} | {cells['untrusted']} | {wcell} | {un['text']} | {se['text']} "
          f"| {'ok' if ok else 'FAIL'} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
