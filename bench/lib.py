"""The set-up bench/agent.py and bench/verify.py share: a scratch directory
with a copy of pinfold and a busybox image, the test user, and a real
`pinfold server` and `pinfold agent`s on 127.0.0.1."""
import json, os, subprocess, sys, tempfile, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN, REG = "pfa_bench_admin", "pfg_bench_registration"


def pinfold():
    """argv[1], else the release build."""
    if len(sys.argv) > 1:
        return sys.argv[1]
    return os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release/pinfold")


def make_work(prefix, homes):
    """/tmp/PREFIX...: a copy of pinfold, a busybox image and the agents'
    `homes`, given to pinfold-test when run as root.
    Returns (work, image, as_user: the command prefix that runs as pinfold-test)."""
    work = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(work, 0o755)
    subprocess.run(["cp", pinfold(), f"{work}/pinfold"], check=True)
    image = subprocess.run(["bash", f"{ROOT}/tests/make-busybox-image.sh", f"{work}/image"],
                           check=True, capture_output=True, text=True).stdout.strip()
    as_user = []
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "pinfold-test:", work], check=True)
        as_user = ["setpriv", "--reuid=pinfold-test", "--regid=pinfold-test", "--init-groups"]
    for h in homes:
        os.makedirs(f"{work}/{h}", exist_ok=True)
        if as_user:
            subprocess.run(["chown", "pinfold-test:", f"{work}/{h}"], check=True)
    return work, image, as_user


def start_server(work, port, extra=()):
    """`pinfold server` on 127.0.0.1:PORT, once it listens. Returns (process, url)."""
    server = subprocess.Popen([f"{work}/pinfold", "server", "--listen", f"127.0.0.1:{port}", *extra],
                              env={**os.environ, "PINFOLD_HOME": f"{work}/server-home", "PINFOLD_ADMIN_TOKEN": ADMIN,
                                   "PINFOLD_REGISTRATION_TOKEN": REG, "RUST_LOG": "warn"},
                              stdout=subprocess.PIPE, text=True)
    for line in server.stdout:
        if "listening on" in line:
            break
    return server, f"http://127.0.0.1:{port}"


def start_agent(work, as_user, url, home, name, extra=()):
    """`pinfold agent` named NAME over WORK/HOME, in a clean environment,
    with EXTRA arguments."""
    return subprocess.Popen(as_user + ["env", "-i", "PATH=/usr/bin:/bin:/usr/sbin:/sbin", f"HOME={work}",
                                       f"PINFOLD_HOME={work}/{home}", "RUST_LOG=warn",
                                       f"{work}/pinfold", "agent", "--server", url, "--registration-token", REG,
                                       "--name", name, "--allow-local-images", *extra])


def submit(url, spec, **fields):
    """POSTs a job as the admin; its id."""
    body = json.dumps({"spec": spec, **fields}).encode()
    req = urllib.request.Request(url + "/api/v1/jobs", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())["job_id"]


def get(url, path):
    """GETs PATH as the admin; the response body."""
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req) as r:
        return r.read()
