// The GitHub Actions runner's container hook for pinfold: set
// ACTIONS_RUNNER_CONTAINER_HOOKS to this file's absolute path (see README.md).
//
// A .js hook, not a .sh one: the runner starts a .sh hook with the `bash`
// it finds first in the job's own GITHUB_PATH entries (its PrependPath), on
// the host, so a step that writes an executable `bash` into the workspace
// and adds that directory to GITHUB_PATH would run it outside the sandbox
// at the next hook call. A .js hook runs with the runner's own node, by
// absolute path, and this file names pinfold by absolute path too (the
// hook's PATH also starts with the job's entries).
//
// It passes the runner's JSON on stdin to `pinfold gha-hook`, the runner's
// cancel (SIGINT, then SIGTERM) on to it, and its exit status back.
"use strict";
const { spawn } = require("child_process");

// The operator's choices: edit here, or set them in the runner's .env
// (a job cannot change the runner's environment).
const PINFOLD = process.env.PINFOLD_BIN || "/usr/bin/pinfold";
const ARGS = ["gha-hook"];

if (!PINFOLD.startsWith("/")) {
  console.error("pinfold-hook.js: PINFOLD_BIN must be an absolute path");
  process.exit(1);
}
// Drop the job's PATH entries: pinfold finds its helpers (newuidmap,
// pasta) here. Edit it if yours are elsewhere.
const env = Object.assign({}, process.env, { PATH: "/usr/local/bin:/usr/bin:/bin" });

const child = spawn(PINFOLD, ARGS, { stdio: ["pipe", "inherit", "inherit"], env });
process.stdin.pipe(child.stdin);
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => child.kill(sig));
}
child.on("error", (e) => {
  console.error(`pinfold-hook.js: cannot run ${PINFOLD}: ${e.message}`);
  process.exit(1);
});
child.on("exit", (code, signal) => process.exit(code === null ? 1 : code));
