#!/usr/bin/env python3
"""Dashboard benchmark: the web pages against `pinfold logs --follow` on the
same jobs, in one run.

    sudo python3 bench/dashboard.py [PINFOLD] [RUNS] [TABS]

Starts `pinfold server` (root), one `pinfold agent --concurrency 5` and
Debian's chromedriver + headless Chromium (both as pinfold-test when run as
root) on 127.0.0.1, with a busybox image built by tests/make-busybox-image.sh.
WebDriver is spoken directly over HTTP (W3C JSON), so nothing else is needed.

* First log line: RUNS jobs, one at a time. Each job's page is open and a
  `pinfold logs --follow` is running before the step prints its first line,
  which carries the host's /proc/uptime read inside the container. The page
  records when the line appears (a MutationObserver, wall clock), the harness
  when the CLI prints it; both minus the print time. /proc/uptime has 10 ms
  resolution and is truncated, so each figure may be up to 10 ms high.
* A 64 MiB log (the server's cap): a job prints 64 MiB; then, interleaved,
  RUNS loads of its page (first contentful paint, which holds the tail, and
  the HTML's last byte, from the browser's own timing) and RUNS
  `pinfold logs JOB` (the CLI's way to see the tail: it fetches the log).
* Server CPU: 5 jobs printing a line every 100 ms; the server's CPU time
  (/proc/PID/stat) over 10 s with no follower, with TABS browser tabs
  following their logs (TABS/5 per job), and with TABS `pinfold logs --follow`.

Never asserts timings; prints medians and the last line
`first line median: browser N ms, logs --follow M ms; 64 MiB page: first paint P ms`.
"""
import json, os, random, re, statistics, subprocess, sys, threading, time, urllib.request

sys.dont_write_bytecode = True
from lib import ADMIN, get, make_work, start_agent, start_server, submit as submit_spec

RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
TABS = int(sys.argv[3]) if len(sys.argv) > 3 else 50

work, image, as_user = make_work("pinfold-dash-bench-", ["agent-home", "browser-home"])
port = 18000 + os.getpid() % 1000
server, url = start_server(work, port, [])
agent = start_agent(work, as_user, url, "agent-home", "bench-runner", ["--concurrency", "5"])
dport = port + 1000
driver = subprocess.Popen(as_user + ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={work}/browser-home",
                                     "/usr/bin/chromedriver", f"--port={dport}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
WD = f"http://127.0.0.1:{dport}"
cli_env = {"PATH": "/usr/bin:/bin", "PINFOLD_SERVER": url, "PINFOLD_TOKEN": ADMIN}


def wd(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(WD + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["value"]


def wait_listening(port_):
    for _ in range(400):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port_}/status", timeout=1)
            return
        except Exception:
            time.sleep(0.05)
    sys.exit("chromedriver did not start")


class Browser:
    def __init__(self):
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--window-size=1280,900", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run"]}}}}
        self.sid = wd("POST", "/session", caps)["sessionId"]

    def go(self, path):
        wd("POST", f"/session/{self.sid}/url", {"url": url + path})

    def js(self, script, *args):
        return wd("POST", f"/session/{self.sid}/execute/sync", {"script": script, "args": list(args)})

    def new_tab(self):
        h = wd("POST", f"/session/{self.sid}/window/new", {"type": "tab"})["handle"]
        wd("POST", f"/session/{self.sid}/window", {"handle": h})

    def sign_in(self):
        self.go("/ui/sign-in")
        self.js("document.getElementById('token').value = arguments[0]; document.querySelector('main form').submit();",
                ADMIN)
        for _ in range(200):
            if self.js("return location.pathname") == "/ui/jobs":
                return
            time.sleep(0.05)
        sys.exit("sign-in failed")

    def close(self):
        wd("DELETE", f"/session/{self.sid}")


def job_state(job):
    return json.loads(get(url, f"/api/v1/jobs/{job}"))["state"]


def wait_done(job, within=300):
    end = time.time() + within
    while time.time() < end:
        if job_state(job) not in ("queued", "running"):
            return
        time.sleep(0.05)
    sys.exit(f"job {job} did not end")


def submit(steps):
    return submit_spec(url, f"image: {image}\nsteps:\n{steps}")


def uptime_offset():
    """Wall clock minus /proc/uptime: the minimum over many reads (uptime is
    truncated to 10 ms, so the minimum is the true offset)."""
    best = None
    for _ in range(300):
        with open("/proc/uptime") as f:
            u = float(f.read().split()[0])
        o = time.time() - u
        best = o if best is None else min(best, o)
        time.sleep(random.random() / 1000)
    return best


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


wait_listening(dport)
b = Browser()
b.sign_in()
offset = uptime_offset()
# Warm up: the image is imported once.
warm = submit("  - name: warm\n    run: echo warm\n")
wait_done(warm)

OBSERVE = """
window.__seen = null;
const pre = document.getElementById('logview');
new MutationObserver(() => {
  if (window.__seen === null && pre.textContent.includes('first-line ')) {
    window.__seen = performance.timeOrigin + performance.now();
  }
}).observe(pre, {childList: true, subtree: true, characterData: true});
return true;
"""

browser_ms, cli_ms = [], []
for i in range(RUNS):
    job = submit("  - name: first\n    run: |\n      sleep 1.5\n      echo \"first-line $(cat /proc/uptime)\"\n"
                 "      sleep 0.5\n")
    seen_cli = {}
    cli = subprocess.Popen([f"{work}/pinfold", "logs", str(job), "--follow"], env=cli_env,
                           stdout=subprocess.PIPE, text=True)

    def read_cli(p=cli, out=seen_cli):
        for line in p.stdout:
            if "first-line " in line and "t" not in out:
                out["t"] = time.time()
                out["line"] = line
    t = threading.Thread(target=read_cli)
    t.start()
    b.go(f"/ui/jobs/{job}")
    b.js(OBSERVE)
    wait_done(job)
    t.join(timeout=30)
    cli.wait(timeout=30)
    m = re.search(r"first-line ([0-9.]+)", seen_cli.get("line", ""))
    if not m:
        sys.exit(f"job {job}: the CLI never printed the line")
    printed = float(m.group(1)) + offset
    seen = b.js("return window.__seen")
    if seen is None:
        sys.exit(f"job {job}: the page never showed the line")
    browser_ms.append(seen - printed * 1000)
    cli_ms.append((seen_cli["t"] - printed) * 1000)
print(f"first log line, {RUNS} jobs: browser median {statistics.median(browser_ms):.1f} ms "
      f"(min {min(browser_ms):.1f}, max {max(browser_ms):.1f}); "
      f"logs --follow median {statistics.median(cli_ms):.1f} ms "
      f"(min {min(cli_ms):.1f}, max {max(cli_ms):.1f})", flush=True)

# A 64 MiB log.
big = submit("  - name: big\n    run: yes 'pinfold 64 MiB log line 0123456789abcdefghijklmnopqrstuvwxyz'"
             " | head -c 67108864\n")
wait_done(big)
size = json.loads(get(url, f"/api/v1/jobs/{big}"))["log_bytes"]
paint, html_end, cli_full = [], [], []
order = ["page", "cli"] * RUNS
random.shuffle(order)
for what in order:
    if what == "page":
        b.go("/ui/jobs")
        b.go(f"/ui/jobs/{big}")
        for _ in range(100):
            t = b.js("const p = performance.getEntriesByName('first-contentful-paint')[0];"
                     "const n = performance.getEntriesByType('navigation')[0];"
                     "return p ? [p.startTime, n.responseEnd] : null")
            if t:
                break
            time.sleep(0.02)
        last = b.js("const l = [...document.querySelectorAll('#logview .l')].pop(); return l ? l.innerText : ''")
        if "log truncated" not in last and "job" not in last:
            sys.exit(f"the page's last line is not the log's end: {last!r}")
        paint.append(t[0])
        html_end.append(t[1])
    else:
        s = time.time()
        subprocess.run([f"{work}/pinfold", "logs", str(big)], env=cli_env, stdout=subprocess.DEVNULL, check=True)
        cli_full.append((time.time() - s) * 1000)
print(f"{size / 1048576:.1f} MiB log, {RUNS} loads each, interleaved: page first paint median "
      f"{statistics.median(paint):.0f} ms (HTML complete {statistics.median(html_end):.0f} ms); "
      f"`pinfold logs` of the whole log {statistics.median(cli_full):.0f} ms", flush=True)

# Server CPU with followers.
ticker = "  - name: ticker\n    run: |\n      i=0; while [ $i -lt 900 ]; do i=$((i+1)); echo \"tick $i of a job log line\"; sleep 0.1; done\n"
jobs = [submit(ticker) for _ in range(5)]
for j in jobs:
    while job_state(j) == "queued":
        time.sleep(0.1)
time.sleep(2)


def measure(label):
    c0, t0 = cpu_secs(server.pid), time.time()
    time.sleep(10)
    c1, t1 = cpu_secs(server.pid), time.time()
    pct = 100 * (c1 - c0) / (t1 - t0)
    print(f"server CPU, {label}: {pct:.1f}% of one core", flush=True)
    return pct


idle = measure("5 running jobs, no follower")
for n in range(TABS):
    if n:
        b.new_tab()
    b.go(f"/ui/jobs/{jobs[n % 5]}")
time.sleep(3)
following = b.js("return document.getElementById('livestate').textContent")
tabs = measure(f"{TABS} browser tabs following ({following.strip()!r} in the last)")
lines_last_tab = b.js("return document.querySelectorAll('#logview .l').length")
b.close()
clis = [subprocess.Popen([f"{work}/pinfold", "logs", str(jobs[n % 5]), "--follow"], env=cli_env,
                         stdout=subprocess.DEVNULL) for n in range(TABS)]
time.sleep(3)
follows = measure(f"{TABS} `pinfold logs --follow`")
for c in clis:
    c.kill()
print(f"(the last tab showed {lines_last_tab} lines)")

for p in (agent, driver, server):
    p.kill()
subprocess.run(["rm", "-rf", work])
print(f"first line median: browser {statistics.median(browser_ms):.1f} ms, logs --follow "
      f"{statistics.median(cli_ms):.1f} ms; 64 MiB page: first paint {statistics.median(paint):.0f} ms; "
      f"server CPU idle/{TABS} tabs/{TABS} follows: {idle:.1f}%/{tabs:.1f}%/{follows:.1f}%")
