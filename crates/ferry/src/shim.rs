//! The supervisor of a detached container: `ferry container-shim`, a hidden subcommand that
//! `ferry run -d` and `ferry start` start in a session of its own.
//!
//! It holds the container's lock for as long as it lives (inherited from the command that
//! started it), makes the container with `runc create` whose stdout and stderr are its pipes,
//! starts it, tells the waiting command (through the ready pipe) that the container runs or
//! why it could not start, writes the container's output to `container.log` and, being the
//! subreaper of the container's process, reaps it and records its exit code. At the end it
//! deletes runc's state and unmounts the rootfs, or removes the container for `--rm`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context as _, Result};
use ferry_runtime::{RunStdio, Runc};
use ferry_snapshot::Snapshotter;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::container::{self, now, ContainerDir, Record, Status};
use crate::run::RunFailed;

/// The log of a detached container's output, in its directory.
pub const LOG_FILE: &str = "container.log";

/// Arguments of `ferry container-shim`.
#[derive(clap::Args)]
pub struct ShimArgs {
    /// The container's ID.
    #[arg(long)]
    pub id: String,
    /// The inherited descriptor holding the container's lock.
    #[arg(long)]
    pub lock_fd: i32,
    /// The inherited write end of the ready pipe.
    #[arg(long)]
    pub ready_fd: i32,
}

/// One line of `container.log`, as docker's json-file log driver writes it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    /// The line with its newline (none on a last line that has none).
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When the supervisor read it, RFC 3339.
    pub time: String,
}

/// Starts the supervisor for the container of `dir` (mounted, bundle and record written) and
/// waits until the container runs; a container that cannot start is an error with docker's
/// exit code for it.
pub fn spawn(root: &Path, dir: &ContainerDir) -> Result<()> {
    let (mut ready_read, ready_write) = std::io::pipe().context("create the ready pipe")?;
    fcntl(&ready_write, FcntlArg::F_SETFD(FdFlag::empty())).context("share the ready pipe")?;
    let shim_log = File::create(dir.bundle.join("shim.log")).context("create shim.log")?;
    let exe = std::env::current_exe().context("find the ferry binary")?;
    let mut command = Command::new(exe);
    command
        .arg("--root")
        .arg(root)
        .args(["container-shim", "--id", &dir.id])
        .arg("--lock-fd")
        .arg(dir.lock_fd().to_string())
        .arg("--ready-fd")
        .arg(ready_write.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(shim_log);
    // SAFETY: setsid is async-signal-safe; it detaches the supervisor from ferry's terminal.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
    }
    let mut child = command.spawn().context("start the container supervisor")?;
    drop(ready_write);

    let mut answer = String::new();
    let read = ready_read.read_to_string(&mut answer);
    // The supervisor stays; reap it only if it already exited, so no zombie is left here.
    let _ = child.try_wait();
    read.context("read the ready pipe")?;
    parse_ready(&answer, &dir.bundle)
}

/// `OK`, or `ERR <exit code> <reason>`.
fn parse_ready(answer: &str, bundle: &Path) -> Result<()> {
    let answer = answer.trim_end();
    if answer == "OK" {
        return Ok(());
    }
    if let Some(rest) = answer.strip_prefix("ERR ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, "unknown reason"));
        let code = code.parse().unwrap_or(125);
        return Err(anyhow!(reason.to_string()).context(RunFailed(code)));
    }
    let log = bundle.join("shim.log");
    Err(anyhow!(
        "the container supervisor ended before the container started (see {})",
        log.display()
    )
    .context(RunFailed(125)))
}

/// `ferry container-shim`: supervises the container to its end; returns 0.
pub fn shim(root: &Path, args: &ShimArgs) -> Result<i32> {
    // SAFETY: the starting command passed these descriptors and keeps no other use of them.
    let lock = unsafe { OwnedFd::from_raw_fd(args.lock_fd) };
    let mut ready = Some(unsafe { File::from_raw_fd(args.ready_fd) });
    // Neither runc nor the container keeps these: the lock is held exactly while this lives.
    fcntl(&lock, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).context("keep the lock to ferry")?;
    if let Some(ready) = &ready {
        fcntl(ready, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).context("keep the pipe to ferry")?;
    }
    let result = supervise(root, &args.id, &mut ready);
    if let Err(e) = &result {
        tracing::error!(container = %args.id, error = %format!("{e:#}"), "supervisor failed");
        if let Some(mut ready) = ready.take() {
            let code = e.downcast_ref::<RunFailed>().map_or(125, |c| c.0);
            let parts: Vec<String> = e
                .chain()
                .map(|c| c.to_string())
                // The exit code marker ([`RunFailed`]) travels as the code, not as text.
                .filter(|text| text != "run")
                .collect();
            let reason = parts.join(": ").replace('\n', " ");
            let _ = writeln!(ready, "ERR {code} {reason}");
        }
    }
    drop(lock);
    Ok(0)
}

fn supervise(root: &Path, id: &str, ready: &mut Option<File>) -> Result<()> {
    let bundle = root.join("containers").join(id);
    let runc = Runc::new(root.join("runc"));
    let mut record = Record::load(root, id)?;

    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("become the subreaper");
    }

    let log_path = bundle.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let log = Arc::new(Mutex::new(log));
    let (out_read, out_write) = std::io::pipe().context("create a pipe")?;
    let (err_read, err_write) = std::io::pipe().context("create a pipe")?;
    let stdio = RunStdio {
        stdin: Stdio::null(),
        stdout: out_write.into(),
        stderr: err_write.into(),
    };

    let started = runc.create(&bundle, id, stdio).and_then(|pid| {
        runc.start(&bundle, id).map(|()| pid).inspect_err(|_| {
            let _ = runc.delete(id);
        })
    });
    let pid = match started {
        Ok(pid) => pid,
        Err(e) => {
            record.status = Status::Created;
            record.exit_code = Some(e.exit_code());
            record.error = Some(e.to_string());
            record.save(root)?;
            let code = e.exit_code();
            return Err(anyhow!(e).context(RunFailed(code)));
        }
    };
    let copiers = [
        copy_lines(out_read, "stdout", log.clone()),
        copy_lines(err_read, "stderr", log),
    ];

    record.status = Status::Running;
    record.pid = Some(pid);
    record.exit_code = None;
    record.error = None;
    record.started_at = Some(now());
    record.save(root)?;
    if let Some(mut ready) = ready.take() {
        let _ = writeln!(ready, "OK");
    }

    let code = reap_until(pid);
    for copier in copiers {
        let _ = copier.join();
    }
    finish(root, &runc, &mut record, code)
}

/// Reaps every child (orphans of the container come here too) until `pid` exits; returns its
/// exit code, 128+N for signal N.
fn reap_until(pid: i32) -> i32 {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => return code,
            Ok(WaitStatus::Signaled(p, signal, _)) if p.as_raw() == pid => {
                return 128 + signal as i32
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(pid, error = %e, "lost the container's process");
                return 255;
            }
        }
    }
}

/// Records the end of the run, deletes runc's state and unmounts the rootfs; removes the
/// container for `--rm`.
fn finish(root: &Path, runc: &Runc, record: &mut Record, code: i32) -> Result<()> {
    tracing::info!(container = %record.id, code, "container exited");
    if let Err(e) = runc.delete(&record.id) {
        tracing::warn!(container = %record.id, error = %e, "runc state left behind");
    }
    let bundle = root.join("containers").join(&record.id);
    let snapshotter = Snapshotter::new(root.join("snapshots")).map_err(|e| anyhow!(e))?;
    if record.auto_remove {
        container::release_name(root, &record.name, &record.id);
        container::release_dir(&record.id, &bundle, true, &snapshotter);
        return Ok(());
    }
    record.status = Status::Exited;
    record.pid = None;
    record.exit_code = Some(code);
    record.finished_at = Some(now());
    record.save(root)?;
    container::release_dir(&record.id, &bundle, false, &snapshotter);
    Ok(())
}

/// Copies the lines of one stream into the log until the stream ends.
fn copy_lines(
    stream: std::io::PipeReader,
    name: &'static str,
    log: Arc<Mutex<File>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(stream = name, error = %e, "reading the container's output");
                    return;
                }
            }
            let entry = LogLine {
                log: String::from_utf8_lossy(&line).into_owned(),
                stream: name.to_string(),
                time: now(),
            };
            let Ok(mut json) = serde_json::to_vec(&entry) else {
                continue;
            };
            json.push(b'\n');
            let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = file.write_all(&json) {
                tracing::warn!(error = %e, "writing the container log");
            }
        }
    })
}

/// Checks that a container may be started by a supervisor now.
pub fn check_startable(record: &Record) -> Result<()> {
    if record.status == Status::Running {
        bail!("container {} is already running", record.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_answers_become_results_with_exit_codes() {
        let bundle = Path::new("/b");
        assert!(parse_ready("OK\n", bundle).is_ok());
        let err = parse_ready("ERR 127 exec: \"x\": not found\n", bundle).unwrap_err();
        assert_eq!(err.downcast_ref::<RunFailed>().unwrap().0, 127);
        assert_eq!(err.root_cause().to_string(), "exec: \"x\": not found");
        let err = parse_ready("", bundle).unwrap_err();
        assert_eq!(err.downcast_ref::<RunFailed>().unwrap().0, 125);
        assert!(crate::one_line(&err).contains("/b/shim.log"));
    }
}
