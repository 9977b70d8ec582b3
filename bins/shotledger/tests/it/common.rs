//! Running the `shotledger` binary and reading what it printed.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// What one run of the binary printed, and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Its stdout, one JSON object (`--json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts the exit code; returns the run.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "exit code of {self:#?}");
        self
    }
}

/// `shotledger ARGS` on the database `url`, with nothing else configured.
pub fn run(url: &str, args: &[&str]) -> Run {
    run_with(&[("DATABASE_URL", url)], args, None)
}

/// `shotledger ARGS` with only `env` (and `PATH`) in its environment, `stdin` fed to it,
/// in an empty working folder (so no `config/default.toml` is picked up).
pub fn run_with(env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Run {
    let args = args.to_vec();
    let dir = tempfile::tempdir().expect("a working folder");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shotledger"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .args(&args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start shotledger");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("shotledger ran");
    use std::os::unix::process::ExitStatusExt;
    let code = out.status.code().unwrap_or_else(|| {
        panic!(
            "shotledger {args:?} was killed by signal {:?}; stderr: {}",
            out.status.signal(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Run {
        code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
