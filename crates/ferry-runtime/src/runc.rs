//! Driving the runc binary: `run` in the foreground, `create` and `start` for a supervisor,
//! `kill`, `exec` and `delete`.

use std::fs;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use nix::errno::Errno;
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

use crate::error::{Error, EXIT_START_FAILED};
use crate::signals::Forwarding;

/// Environment variable naming the runc binary to use instead of `runc` from PATH.
pub const RUNC_ENV: &str = "FERRY_RUNC";

/// runc's log of one run, inside the bundle.
const LOG_FILE: &str = "runc.log";

/// runc exits 1 from its fatal-error path (runc `main.go`); with an error in its log, that 1 is
/// runc's failure, not the container's exit code.
const RUNC_FAILED: i32 = 1;

/// runc exec's exit code when the process could not be started (runc `exec.go`).
const EXIT_FAILED_EXEC: i32 = 255;

/// Standard streams for a container run by [`Runc::run_with`].
#[derive(Debug)]
pub struct RunStdio {
    /// The container's stdin.
    pub stdin: Stdio,
    /// The container's stdout.
    pub stdout: Stdio,
    /// The container's stderr, which runc also writes its own errors to.
    pub stderr: Stdio,
}

impl Default for RunStdio {
    /// ferry's own streams.
    fn default() -> Self {
        RunStdio {
            stdin: Stdio::inherit(),
            stdout: Stdio::inherit(),
            stderr: Stdio::inherit(),
        }
    }
}

/// A runc binary with its own state directory, so ferry never touches the host's runc state.
#[derive(Clone, Debug)]
pub struct Runc {
    binary: PathBuf,
    state_dir: PathBuf,
}

impl Runc {
    /// runc from PATH (or `$FERRY_RUNC`) keeping its state under `state_dir` (`ROOT/runc`).
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let binary =
            std::env::var_os(RUNC_ENV).map_or_else(|| PathBuf::from("runc"), PathBuf::from);
        Runc {
            binary,
            state_dir: state_dir.into(),
        }
    }

    /// The same state directory with another runc binary.
    pub fn with_binary(self, binary: impl Into<PathBuf>) -> Self {
        Runc {
            binary: binary.into(),
            ..self
        }
    }

    /// The runc binary this runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// `runc run --bundle BUNDLE ID` in the foreground with ferry's own stdin, stdout and
    /// stderr; see [`Runc::run_with`].
    pub fn run(&self, bundle: &Path, id: &str) -> Result<i32, Error> {
        self.run_with(bundle, id, RunStdio::default())
    }

    /// Runs the container of `bundle` to its end and returns its exit code (128+N when killed
    /// by signal N). SIGINT and SIGTERM sent to ferry meanwhile are forwarded to runc, which
    /// passes them to the container. When runc cannot start the container, the error carries
    /// runc's reason and maps to exit code 127 (command not found), 126 (not executable) or
    /// 125. The container's runc state is gone when this returns.
    ///
    /// Blocks the calling thread; not for an async executor's worker threads.
    pub fn run_with(&self, bundle: &Path, id: &str, stdio: RunStdio) -> Result<i32, Error> {
        let log = bundle.join(LOG_FILE);
        match fs::remove_file(&log) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Error::io(&log)(e)),
            _ => {}
        }

        let mut command = self.command();
        command
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "run", "--bundle"]);
        command.arg(bundle).arg(id);
        command
            .stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);

        // TODO: a signal arriving between these two lines is dropped; queue it if it matters.
        let mut forwarding = Forwarding::start()?;
        let mut child = command.spawn().map_err(|source| self.spawn_error(source))?;
        tracing::debug!(id, pid = child.id(), "runc run started");
        let status = wait_forwarding(&mut child, &mut forwarding, id);
        drop(forwarding);
        let code = exit_code(status?);

        let failure = (code == RUNC_FAILED).then(|| last_error(&log)).flatten();
        self.remove_leftover_state(id);
        if let Some(reason) = failure {
            return Err(classify_start_failure(id, reason));
        }
        tracing::debug!(id, code, "container exited");
        Ok(code)
    }

    /// Removes the container's runc state if it is still there (`runc delete --force ID`);
    /// a container that does not exist is not an error.
    pub fn delete(&self, id: &str) -> Result<(), Error> {
        let output = self
            .command()
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| self.spawn_error(source))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("does not exist") {
            return Ok(());
        }
        let reason = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        Err(Error::Delete {
            id: id.to_string(),
            reason: reason.trim().to_string(),
        })
    }

    /// `runc create`: sets the container up with `stdio` as its standard streams and leaves
    /// its process waiting for [`Runc::start`]; returns the container process's pid (read from
    /// runc's pid file in the bundle). The process is re-parented to the nearest subreaper once
    /// runc exits, so the caller should be one (`PR_SET_CHILD_SUBREAPER`) to reap it.
    ///
    /// Blocks the calling thread.
    pub fn create(&self, bundle: &Path, id: &str, stdio: RunStdio) -> Result<i32, Error> {
        let log = bundle.join(LOG_FILE);
        let pid_file = bundle.join("pid");
        for stale in [&log, &pid_file] {
            match fs::remove_file(stale) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::io(stale)(e));
                }
                _ => {}
            }
        }
        let mut command = self.command();
        command
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        let status = command.status().map_err(|e| self.spawn_error(e))?;
        if !status.success() {
            self.remove_leftover_state(id);
            let reason = last_error(&log).unwrap_or_else(|| format!("runc create {status}"));
            return Err(classify_start_failure(id, reason));
        }
        let text = fs::read_to_string(&pid_file).map_err(Error::io(&pid_file))?;
        text.trim().parse().map_err(|_| Error::Start {
            id: id.to_string(),
            reason: format!("runc wrote no pid to {}", pid_file.display()),
        })
    }

    /// `runc start`: runs the user's command in a container made by [`Runc::create`].
    pub fn start(&self, bundle: &Path, id: &str) -> Result<(), Error> {
        let log = bundle.join(LOG_FILE);
        let output = self
            .command()
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "start", id])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        if output.status.success() {
            return Ok(());
        }
        let reason = last_error(&log)
            .unwrap_or_else(|| String::from_utf8_lossy(&output.stderr).trim().to_string());
        Err(classify_start_failure(id, reason))
    }

    /// `runc kill ID SIGNAL`: sends `signal` (a name such as `TERM` or a number) to the
    /// container's first process.
    pub fn kill(&self, id: &str, signal: &str) -> Result<(), Error> {
        let output = self
            .command()
            .args(["kill", id, signal])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        if output.status.success() {
            return Ok(());
        }
        Err(Error::Kill {
            id: id.to_string(),
            reason: last_line(&output.stderr),
        })
    }

    /// `runc exec`: runs `args` in the running container `id` with runc's `options` (`--env`,
    /// `--cwd`, `--user`, `--tty`) and ferry's own stdio, and returns the process's exit code;
    /// a command that cannot be started maps to 126 or 127 as [`Runc::run_with`] does. runc
    /// logs to `log`, which the caller removes.
    ///
    /// Blocks the calling thread.
    pub fn exec(
        &self,
        id: &str,
        log: &Path,
        options: &[String],
        args: &[String],
    ) -> Result<i32, Error> {
        let mut command = self.command();
        command
            .arg("--log")
            .arg(log)
            .args(["--log-format", "json", "exec"])
            .args(options)
            .arg(id)
            .args(args);
        let mut forwarding = Forwarding::start()?;
        let mut child = command.spawn().map_err(|source| self.spawn_error(source))?;
        let status = wait_forwarding(&mut child, &mut forwarding, id);
        drop(forwarding);
        let code = exit_code(status?);
        if code == RUNC_FAILED || code == EXIT_FAILED_EXEC {
            if let Some(reason) = last_error(log) {
                let reason = reason
                    .strip_prefix("exec failed: ")
                    .unwrap_or(&reason)
                    .to_string();
                return Err(classify_start_failure(id, reason));
            }
        }
        Ok(code)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--root").arg(&self.state_dir);
        command
    }

    fn spawn_error(&self, source: io::Error) -> Error {
        Error::Spawn {
            binary: self.binary.clone(),
            source,
        }
    }

    /// A runc that was killed cannot clean up after itself; its state would block the ID.
    fn remove_leftover_state(&self, id: &str) {
        if !self.state_dir.join(id).exists() {
            return;
        }
        if let Err(e) = self.delete(id) {
            tracing::warn!(id, error = %e, "runc state left behind");
        }
    }
}

/// Waits for runc to exit while forwarding signals to it; stops forwarding before the pid is
/// reaped (waitid with WNOWAIT first), so a reused pid is never signalled.
fn wait_forwarding(
    child: &mut Child,
    forwarding: &mut Forwarding,
    id: &str,
) -> Result<ExitStatus, Error> {
    let wait_error = |source: io::Error| Error::Wait {
        id: id.to_string(),
        source,
    };
    let pid = i32::try_from(child.id()).map_err(|e| wait_error(io::Error::other(e)))?;
    forwarding.watch(pid);

    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    let exited = loop {
        match waitid(Id::Pid(Pid::from_raw(pid)), flags) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    forwarding.unwatch();

    if let Err(e) = exited {
        return Err(wait_error(e.into()));
    }
    child.wait().map_err(wait_error)
}

/// The shell's convention: the exit code, or 128+N for death by signal N.
fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => EXIT_START_FAILED,
    }
}

/// The message of the last error-level entry of runc's JSON log, without runc's
/// "runc run failed: " (or create) prefix.
fn last_error(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    let message = text
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<LogEntry>(line).ok())
        .find(|entry| entry.level == "error")?
        .msg;
    let message = ["runc run failed: ", "runc create failed: "]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .unwrap_or(&message);
    Some(message.trim().to_string())
}

/// The last non-empty line of a command's stderr.
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().find(|l| !l.trim().is_empty());
    line.unwrap_or("no message").trim().to_string()
}

#[derive(serde::Deserialize)]
struct LogEntry {
    level: String,
    msg: String,
}

/// Sorts runc's reason into docker's exit codes, matching the messages of runc's exec step
/// (`exec: "x": executable file not found in $PATH`, `stat /x: no such file or directory`,
/// `permission denied`) as the docker CLI does.
fn classify_start_failure(id: &str, reason: String) -> Error {
    let id = id.to_string();
    let exec_step = reason.contains("exec:");
    if reason.contains("executable file not found")
        || (exec_step && reason.contains("no such file or directory"))
    {
        return Error::CommandNotFound { id, reason };
    }
    if exec_step && (reason.contains("permission denied") || reason.contains("is a directory")) {
        return Error::CommandNotExecutable { id, reason };
    }
    Error::Start { id, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_maps_signals_to_128_plus_n() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }

    #[test]
    fn last_error_reads_runc_json_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runc.log");
        fs::write(
            &log,
            "{\"level\":\"warning\",\"msg\":\"w\",\"time\":\"t\"}\n\
             {\"level\":\"error\",\"msg\":\"runc run failed: unable to start container process: \
             exec: \\\"nosuch\\\": executable file not found in $PATH\",\"time\":\"t\"}\n\
             not json\n",
        )
        .unwrap();
        let want = concat!(
            "unable to start container process: ",
            "exec: \"nosuch\": executable file not found in $PATH"
        );
        assert_eq!(last_error(&log).unwrap(), want);
        assert_eq!(last_error(&dir.path().join("absent")), None);
    }

    #[test]
    fn start_failures_map_to_docker_exit_codes() {
        // Messages as runc 1.1.5 logs them, after "unable to start container process: ".
        let table = [
            ("exec: \"nosuch\": executable file not found in $PATH", 127),
            (
                "exec: \"/nosuch\": stat /nosuch: no such file or directory",
                127,
            ),
            ("exec: \"/bin/f\": permission denied", 126),
            ("exec: \"/bin\": is a directory", 126),
            (
                "error mounting \"/x\" to rootfs at \"/y\": no such file or directory",
                125,
            ),
        ];
        for (detail, want) in table {
            let reason = format!("unable to start container process: {detail}");
            let reason = reason.as_str();
            let err = classify_start_failure("c1", reason.to_string());
            assert_eq!(err.exit_code(), want, "{reason}");
            assert_eq!(
                err.to_string(),
                format!("container c1 failed to start: {reason}")
            );
        }
    }
}
