//! bench/steps.sh's driver: a job container started the way the runner
//! starts one (`pinfold exec --control-fd 3`), asked for steps over
//! [`pinfold_sandbox::container::steps::Control`] as the runner asks.
//!
//! ```text
//! steps start N EXEC...   N steps of `/bin/probe now`: prints the median
//!                         time from the request to the step's first
//!                         instruction (its clock), and to the reply, in µs
//! steps job N EXEC...     a whole job of N `true` steps (for
//!                         bench/alternate.py to time)
//! steps walk EXEC...      `du -s /usr` as step 1 and step 2: prints each
//!                         one's time in µs
//! ```
//!
//! EXEC is the container's command line (`pinfold-exec --rootfs DIR`, or
//! `pinfold exec --rootfs DIR`); `--control-fd 3` is added.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use pinfold_sandbox::container::steps::{Control, StepRequest};

fn now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `t`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

struct Job {
    control: Control,
    child: std::process::Child,
}

impl Job {
    fn start(exec: &[String]) -> Job {
        let (control, theirs) = Control::pair().expect("socket pair");
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(&exec[0]);
        cmd.args(&exec[1..]).args(["--control-fd", "3"]);
        // SAFETY: dup2 is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start pinfold exec");
        drop(theirs);
        Job { control, child }
    }

    /// Runs one step; returns its output and the time from the request
    /// to the reply.
    fn step(&self, argv: &[&str]) -> (String, u64, u64) {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let req = StepRequest {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            ..StepRequest::default()
        };
        let t0 = now_ns();
        self.control.start(&req, w.as_fd()).expect("start the step");
        drop(w);
        let mut out = String::new();
        std::fs::File::from(r)
            .read_to_string(&mut out)
            .expect("read");
        let reply = self
            .control
            .reply(Duration::from_secs(60))
            .expect("reply")
            .expect("a reply within 60 s");
        let t1 = now_ns();
        assert_eq!(reply.exit_code, 0, "{argv:?}: {reply:?} {out}");
        (out, t0, t1)
    }

    fn end(mut self) {
        drop(self.control);
        let s = self.child.wait().expect("wait");
        assert!(s.success(), "pinfold exec: {s}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("start") => {
            let n: usize = args[1].parse().expect("N");
            let job = Job::start(&args[2..]);
            let (mut first, mut round) = (Vec::new(), Vec::new());
            for _ in 0..n {
                let (out, t0, t1) = job.step(&["/bin/probe", "now"]);
                let at: u64 = out.trim().parse().expect("probe now prints a number");
                first.push(at - t0);
                round.push(t1 - t0);
            }
            job.end();
            println!(
                "first instruction median: {} us; reply median: {} us ({n} steps)",
                median(first) / 1000,
                median(round) / 1000
            );
        }
        Some("job") => {
            let n: usize = args[1].parse().expect("N");
            let job = Job::start(&args[2..]);
            for _ in 0..n {
                job.step(&["/bin/true"]);
            }
            job.end();
        }
        Some("walk") => {
            // Step 1 is sent at once, as the runner does: it includes the
            // container's own start, which `steps start` shows alone.
            let job = Job::start(&args[1..]);
            let mut took = Vec::new();
            for _ in 0..2 {
                let (_, t0, t1) = job.step(&["du", "-s", "/usr"]);
                took.push((t1 - t0) / 1000);
            }
            job.end();
            println!("du -s /usr: step 1 {} us, step 2 {} us", took[0], took[1]);
        }
        _ => {
            eprintln!("usage: steps start N EXEC... | job N EXEC... | walk EXEC...");
            std::process::exit(2);
        }
    }
}
