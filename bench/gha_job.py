#!/usr/bin/env python3
"""One GitHub Actions job as the self-hosted runner runs it with container
hooks: prepare_job, N run_script_step calls (each script written to
_work/_temp as the runner does), cleanup_job; each call a new hook process
with one line of JSON on stdin and a response file created empty. Used by
bench/gha.sh.

    gha_job.py RUNNER_DIR IMAGE N HOOK...

HOOK is the hook's command line (e.g. `node pinfold-hook.js`, or `pinfold
gha-hook`); `bare` runs the N scripts with `sh -e` on the host instead, as
the runner does for a job without a container.
"""
import json
import os
import subprocess
import sys
import uuid

runner, image, n, hook = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
work = os.path.join(runner, "_work")
temp = os.path.join(work, "_temp")
SCRIPTS = ["echo building", "ls / >/dev/null", "ls /etc >/dev/null", "date >/dev/null", "echo done"]


def call(command, args, state):
    resp = os.path.join(temp, "_runner_hook_responses", f"{uuid.uuid4()}.json")
    open(resp, "w").close()
    line = json.dumps({"command": command, "responseFile": resp, "args": args, "state": state})
    subprocess.run(hook, input=line + "\n", text=True, check=True, stdout=subprocess.DEVNULL)
    with open(resp) as f:
        body = f.read()
    os.unlink(resp)
    return json.loads(body)["state"] if body.strip() else state


def mounts():
    m = [("/var/run/docker.sock", "/var/run/docker.sock", False), (work, "/__w", False),
         (os.path.join(runner, "externals"), "/__e", True), (temp, "/__w/_temp", False),
         (os.path.join(temp, "_github_home"), "/github/home", False),
         (os.path.join(temp, "_github_workflow"), "/github/workflow", False)]
    return [{"userProvidedValue": None, "sourceVolumePath": s, "targetVolumePath": t, "readOnly": ro}
            for s, t, ro in m]


if hook == ["bare"]:
    for s in SCRIPTS[:n]:
        path = os.path.join(temp, f"{uuid.uuid4()}.sh")
        with open(path, "w") as f:
            f.write(s + "\n")
        subprocess.run(["sh", "-e", path], check=True, stdout=subprocess.DEVNULL, cwd=work)
    sys.exit(0)

container = {"image": image, "dockerfile": None, "entryPointArgs": [""], "entryPoint": None,
             "workingDirectory": "/__w/repo/repo", "createOptions": None, "registry": None,
             "environmentVariables": {}, "portMappings": [], "systemMountVolumes": mounts(),
             "userMountVolumes": []}
state = call("prepare_job", {"container": container, "services": []}, None)
for s in SCRIPTS[:n]:
    guid = uuid.uuid4()
    with open(os.path.join(temp, f"{guid}.sh"), "w") as f:
        f.write(s + "\n")
    call("run_script_step", {"entryPoint": "sh", "entryPointArgs": ["-e", f"/__w/_temp/{guid}.sh"],
                             "environmentVariables": {"HOME": "/github/home", "CI": "true"},
                             "prependPath": [], "workingDirectory": "/__w"}, state)
call("cleanup_job", {}, state)
