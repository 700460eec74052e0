//! The container lifecycle commands: `ps`, `logs`, `stop`, `kill`, `start`, `rm`, `wait`,
//! `inspect` and `exec`, over the records of [`crate::container`].

use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Args;
use ferry_runtime::{ProcessRequest, Runc};
use ferry_snapshot::{Snapshot, Snapshotter};
use serde_json::json;

use crate::container::{self, ContainerDir, Record, Status};
use crate::run::RunFailed;
use crate::shim::{LogLine, LOG_FILE};

/// How often waiting commands look at a container's record again.
const POLL: Duration = Duration::from_millis(50);

/// How long `stop` and `rm -f` wait for a container to go after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// `ferry ps`.
#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default: only running ones).
    #[arg(short, long)]
    pub all: bool,
    /// Print only container IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not shorten IDs and commands.
    #[arg(long)]
    pub no_trunc: bool,
}

/// `ferry logs`.
#[derive(Args)]
pub struct LogsArgs {
    /// Keep printing new output until the container stops.
    #[arg(short, long)]
    pub follow: bool,
    /// The container: a name, an ID or a unique ID prefix.
    pub container: String,
}

/// `ferry stop`.
#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before sending SIGKILL.
    #[arg(
        short = 't',
        long = "time",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    pub time: u64,
    /// The containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `ferry kill`.
#[derive(Args)]
pub struct KillArgs {
    /// The signal: a name (KILL, SIGTERM, HUP) or a number.
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    /// The containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `ferry start`.
#[derive(Args)]
pub struct StartArgs {
    /// The containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `ferry rm`.
#[derive(Args)]
pub struct RmArgs {
    /// Kill running containers first (SIGKILL).
    #[arg(short, long)]
    pub force: bool,
    /// The containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `ferry wait`.
#[derive(Args)]
pub struct WaitArgs {
    /// The containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `ferry inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// The containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `ferry exec`.
#[derive(Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// Keep stdin open and pass it to the command.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a pseudo-terminal (with -i, driven by yours in raw mode).
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE); repeatable.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// Run as this user (a name or uid, optionally with :GROUP, from the container's
    /// /etc/passwd and /etc/group).
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// The container.
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Lists containers as `docker ps` does.
pub fn ps(root: &Path, args: &PsArgs) -> Result<()> {
    let records: Vec<Record> = container::list(root)
        .into_iter()
        .filter(|r| args.all || r.status == Status::Running)
        .collect();
    if args.quiet {
        for r in &records {
            outln!("{}", if args.no_trunc { &r.id } else { &r.id[..12] });
        }
        return Ok(());
    }
    let header = [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    let now = chrono::Utc::now();
    for r in &records {
        let id = if args.no_trunc { &r.id } else { &r.id[..12] };
        let command = r.command.join(" ");
        let command = if args.no_trunc {
            command
        } else {
            ellipsis(&command, 20)
        };
        let created = since(&r.created, now).map_or("-".into(), |d| format!("{d} ago"));
        rows.push(vec![
            id.to_string(),
            r.image.clone(),
            format!("\"{command}\""),
            created,
            status_line(r, now),
            ports_of(root, r),
            r.name.clone(),
        ]);
    }
    print_table(&rows);
    Ok(())
}

/// `docker ps`'s PORTS: the published ports of a container on the bridge.
fn ports_of(root: &Path, r: &Record) -> String {
    let bundle = root.join("containers").join(&r.id);
    let attached = crate::cni::Attachment::load(&bundle).filter(|a| a.ip.is_some());
    attached.map_or_else(String::new, |a| {
        let ports: Vec<String> = a.ports.iter().map(ToString::to_string).collect();
        ports.join(", ")
    })
}

/// `docker ps`'s STATUS: `Up 5 seconds`, `Exited (0) 3 minutes ago`, `Created`.
fn status_line(r: &Record, now: chrono::DateTime<chrono::Utc>) -> String {
    match r.status {
        Status::Created => "Created".to_string(),
        Status::Running => {
            let up = r.started_at.as_deref().and_then(|t| since(t, now));
            format!("Up {}", up.unwrap_or_else(|| "Less than a second".into()))
        }
        Status::Exited => {
            let code = r.exit_code.unwrap_or(0);
            match r.finished_at.as_deref().and_then(|t| since(t, now)) {
                Some(ago) => format!("Exited ({code}) {ago} ago"),
                None => format!("Exited ({code})"),
            }
        }
    }
}

fn since(time: &str, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    let then = chrono::DateTime::parse_from_rfc3339(time).ok()?;
    Some(human_duration(
        (now - then.with_timezone(&chrono::Utc)).num_seconds(),
    ))
}

/// Docker's `units.HumanDuration`.
fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (minutes, hours) = (s / 60, s / 3600);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// `text` cut to `max` characters, the last one an ellipsis, as docker shortens commands.
fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// Columns padded to their widest cell, three spaces apart, as docker prints tables.
fn print_table(rows: &[Vec<String>]) {
    let columns = rows.first().map_or(0, Vec::len);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        outln!("{}", cells.join("   ").trim_end());
    }
}

/// Prints a detached container's output, stdout lines on stdout and stderr lines on stderr.
pub fn logs(root: &Path, args: &LogsArgs) -> Result<()> {
    let record = container::find(root, &args.container)?;
    let path = root.join("containers").join(&record.id).join(LOG_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !record.detached => {
            bail!(
                "container {} keeps no log: it ran in the foreground, its output went to the \
                 terminal",
                args.container
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
    };
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let position = reader.stream_position()?;
        let n = reader
            .read_line(&mut line)
            .context("read the container log")?;
        if n > 0 && line.ends_with('\n') {
            print_log_line(&line);
            continue;
        }
        // End of the log, or a line the supervisor is still writing: read it again later.
        reader.seek(std::io::SeekFrom::Start(position))?;
        if !args.follow {
            return Ok(());
        }
        let running = container::Record::load(root, &record.id)
            .map(|r| r.effective(root).status == Status::Running)
            .unwrap_or(false);
        if !running {
            // The supervisor writes the last lines before it records the exit.
            while reader.read_line(&mut line)? > 0 {
                if line.ends_with('\n') {
                    print_log_line(&line);
                }
                line.clear();
            }
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

fn print_log_line(line: &str) {
    let Ok(entry) = serde_json::from_str::<LogLine>(line) else {
        tracing::warn!("skipping a malformed log line");
        return;
    };
    if entry.stream == "stderr" {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(entry.log.as_bytes());
    } else {
        let mut out = std::io::stdout().lock();
        let written = out
            .write_all(entry.log.as_bytes())
            .and_then(|_| out.flush());
        if written.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
            std::process::exit(0);
        }
    }
}

/// Waits until the container is no longer running or `limit` passes; returns its record
/// then, or `None` at the limit.
fn wait_exit(root: &Path, id: &str, limit: Option<Duration>) -> Option<Record> {
    let deadline = limit.map(|l| Instant::now() + l);
    loop {
        match Record::load(root, id) {
            Ok(r) => {
                let r = r.effective(root);
                // Exited, and the supervisor (or run) has let go: its cleanup is done.
                if r.status != Status::Running && !r.in_use(root) {
                    return Some(r);
                }
            }
            // Removed at exit (`--rm`).
            Err(_) if !root.join("containers").join(id).exists() => return None,
            Err(_) => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

fn gone_or_stopped(root: &Path, id: &str) -> bool {
    Record::load(root, id).map_or(true, |r| {
        let r = r.effective(root);
        r.status != Status::Running && !r.in_use(root)
    })
}

/// `ferry stop`: SIGTERM, then SIGKILL after `-t` seconds; prints each name as given.
pub fn stop(root: &Path, args: &StopArgs) -> Result<()> {
    let runc = Runc::new(root.join("runc"));
    for name in &args.containers {
        let record = container::find(root, name)?;
        if record.status == Status::Running {
            stop_one(root, &runc, &record, Duration::from_secs(args.time))
                .with_context(|| format!("stop {name}"))?;
        }
        outln!("{name}");
    }
    Ok(())
}

fn stop_one(root: &Path, runc: &Runc, record: &Record, grace: Duration) -> Result<()> {
    // A refused SIGTERM (the process may be exiting already) gets the same grace; whether
    // the container stopped is read from its record, and kill_and_wait reports a real failure.
    if let Err(e) = runc.kill(&record.id, "TERM") {
        tracing::debug!(container = %record.id, error = %e, "SIGTERM refused");
    }
    if wait_exit(root, &record.id, Some(grace)).is_some() || gone_or_stopped(root, &record.id) {
        return Ok(());
    }
    tracing::info!(container = %record.id, "still running after SIGTERM, sending SIGKILL");
    kill_and_wait(root, runc, record)
}

/// Sends SIGKILL and waits up to [`KILL_GRACE`] for the supervisor to record the exit. runc
/// refuses to signal a container whose process has already exited (its state may be deleted
/// while the supervisor still cleans up), so a refused signal is an error only when the
/// container has not stopped by the end of the wait.
fn kill_and_wait(root: &Path, runc: &Runc, record: &Record) -> Result<()> {
    let killed = runc.kill(&record.id, "KILL");
    if wait_exit(root, &record.id, Some(KILL_GRACE)).is_some() || gone_or_stopped(root, &record.id)
    {
        return Ok(());
    }
    killed?;
    bail!(
        "container {} still runs {KILL_GRACE:?} after SIGKILL",
        record.name
    );
}

/// `ferry kill`: sends a signal to running containers.
pub fn kill(root: &Path, args: &KillArgs) -> Result<()> {
    let runc = Runc::new(root.join("runc"));
    let signal = args.signal.trim_start_matches("SIG");
    if signal.is_empty() || !signal.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("invalid signal {:?}", args.signal);
    }
    for name in &args.containers {
        let record = container::find(root, name)?;
        if record.status != Status::Running {
            bail!("cannot kill container {name}: container is not running");
        }
        runc.kill(&record.id, signal)
            .with_context(|| format!("kill {name}"))?;
        outln!("{name}");
    }
    Ok(())
}

/// `ferry start`: starts stopped containers again, detached; prints each name as given.
pub fn start(root: &Path, args: &StartArgs) -> Result<()> {
    for name in &args.containers {
        let record = container::find(root, name)?;
        start_one(root, record).with_context(|| format!("start {name}"))?;
        outln!("{name}");
    }
    Ok(())
}

fn start_one(root: &Path, mut record: Record) -> Result<()> {
    crate::shim::check_startable(&record)?;
    let dir = ContainerDir::open(root, &record.id)?;
    let runc = Runc::new(root.join("runc"));
    runc.delete(&record.id)?;
    let snapshotter = Snapshotter::new(root.join("snapshots")).map_err(|e| anyhow!(e))?;
    let lowers: Vec<Snapshot> = record
        .lowers
        .iter()
        .map(|l| Snapshot {
            chain_id: l.chain_id.clone(),
            dir: l.dir.clone(),
        })
        .collect();
    if !is_mounted(&dir.rootfs) {
        snapshotter
            .remount_active(&record.id, &lowers, &dir.rootfs)
            .map_err(|e| anyhow!(e))?;
    }
    record.detached = true;
    let started = reattach(root, &dir.bundle, &record.id)
        .and_then(|_| record.save(root))
        .and_then(|_| crate::shim::spawn(root, &dir));
    if started.is_err() {
        container::release_dir(&record.id, &dir.bundle, false, &snapshotter);
    }
    started
}

/// Puts a container that was on the bridge network back on it, with the same published ports
/// and its new address in its `/etc/hosts`.
fn reattach(root: &Path, bundle: &Path, id: &str) -> Result<()> {
    let Some(previous) = crate::cni::Attachment::load(bundle) else {
        return Ok(());
    };
    // A run killed before its cleanup may have left it attached.
    crate::cni::teardown(bundle, id)?;
    crate::cni::check_ports_free(root, &previous.ports)?;
    let attached = crate::cni::setup(bundle, id, &previous.ports)
        .context("attach the container to the bridge network")?;
    if let Some(ip) = attached.ip {
        crate::runopts::set_own_address(bundle, ip)?;
    }
    Ok(())
}

fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let path = path.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|mount_point| mount_point == path)
    })
}

/// `ferry rm`: removes containers (running ones only with `-f`, after SIGKILL).
pub fn rm(root: &Path, args: &RmArgs) -> Result<()> {
    let runc = Runc::new(root.join("runc"));
    for name in &args.containers {
        let record = container::find(root, name)?;
        if record.status == Status::Running || record.in_use(root) {
            if !args.force {
                bail!(
                    "cannot remove container {name}: container is running: stop the container \
                     before removing or force remove"
                );
            }
            kill_and_wait(root, &runc, &record).with_context(|| format!("remove {name}"))?;
        }
        // A `--rm` container is gone with its supervisor.
        if root.join("containers").join(&record.id).exists() {
            container::remove(root, &record).with_context(|| format!("remove {name}"))?;
        }
        outln!("{name}");
    }
    Ok(())
}

/// `ferry wait`: blocks until each container stops and prints its exit code.
pub fn wait(root: &Path, args: &WaitArgs) -> Result<()> {
    for name in &args.containers {
        let record = container::find(root, name)?;
        match wait_exit(root, &record.id, None) {
            Some(r) => outln!("{}", r.exit_code.unwrap_or(0)),
            None => bail!("container {name} was removed before its exit code was read"),
        }
    }
    Ok(())
}

/// `ferry inspect`: a JSON array with one object per container, in docker's shape.
pub fn inspect(root: &Path, args: &InspectArgs) -> Result<()> {
    let mut out = Vec::new();
    for name in &args.containers {
        let r = container::find(root, name)?;
        let dir: PathBuf = root.join("containers").join(&r.id);
        let network = crate::cni::Attachment::load(&dir).filter(|a| a.ip.is_some());
        let ports: serde_json::Map<String, serde_json::Value> = network
            .iter()
            .flat_map(|a| &a.ports)
            .map(|p| {
                let text = p.to_string();
                let key = text
                    .split_once("->")
                    .map_or(text.as_str(), |(_, c)| c)
                    .to_string();
                let host_ip = p.host_ip.map_or("0.0.0.0".to_string(), |ip| ip.to_string());
                (
                    key,
                    json!([{ "HostIp": host_ip, "HostPort": p.host_port.to_string() }]),
                )
            })
            .collect();
        out.push(json!({
            "Id": r.id,
            "Created": r.created,
            "Path": r.command.first(),
            "Args": r.command.get(1..).unwrap_or_default(),
            "State": {
                "Status": r.status.as_str(),
                "Running": r.status == Status::Running,
                "Pid": r.pid.unwrap_or(0),
                "ExitCode": r.exit_code.unwrap_or(0),
                "Error": r.error.clone().unwrap_or_default(),
                "StartedAt": r.started_at.clone().unwrap_or_default(),
                "FinishedAt": r.finished_at.clone().unwrap_or_default(),
            },
            "Image": r.image_id,
            "Name": format!("/{}", r.name),
            "LogPath": if r.detached { dir.join(LOG_FILE).display().to_string() } else { String::new() },
            "HostConfig": { "AutoRemove": r.auto_remove },
            "GraphDriver": {
                "Name": "overlay",
                "Data": {
                    "LowerDir": r.lowers.iter().rev().map(|l| l.dir.display().to_string())
                        .collect::<Vec<_>>().join(":"),
                    "MergedDir": dir.join("rootfs").display().to_string(),
                },
            },
            "Config": { "Image": r.image, "Cmd": r.command },
            "NetworkSettings": {
                "IPAddress": network.as_ref().and_then(|a| a.ip).map(|ip| ip.to_string()).unwrap_or_default(),
                "Gateway": if network.is_some() { crate::cni::GATEWAY.to_string() } else { String::new() },
                "Ports": ports,
                "SandboxKey": if network.is_some() {
                    crate::cni::netns_path(&r.id).display().to_string()
                } else {
                    String::new()
                },
            },
        }));
    }
    outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `ferry exec`: runs a command in a running container; returns its exit code.
pub fn exec(root: &Path, args: &ExecArgs) -> Result<i32> {
    let fail = |e: anyhow::Error| e.context(RunFailed(ferry_runtime::EXIT_START_FAILED));
    let record = container::find(root, &args.container).map_err(fail)?;
    if record.status != Status::Running {
        return Err(fail(anyhow!("container {} is not running", args.container)));
    }
    let dir = root.join("containers").join(&record.id);
    let mut options = Vec::new();
    for env in &args.env {
        if !env.contains('=') || env.starts_with('=') {
            return Err(fail(anyhow!(
                "invalid environment variable {env:?}: use KEY=VALUE"
            )));
        }
        options.extend(["--env".to_string(), env.clone()]);
    }
    if args.tty {
        use std::io::IsTerminal;
        if args.interactive && !std::io::stdin().is_terminal() {
            return Err(fail(anyhow!("the input device is not a TTY")));
        }
        options.push("--tty".to_string());
    }
    if let Some(cwd) = &args.workdir {
        options.extend(["--cwd".to_string(), cwd.clone()]);
    }
    if let Some(user) = &args.user {
        // Resolved in the running container's own files, as `docker exec -u` does.
        let request = ProcessRequest {
            override_cmd: args.command.clone(),
            override_user: Some(user.clone()),
            ..ProcessRequest::default()
        };
        let process = ferry_runtime::resolve_process(&request, &dir.join("rootfs"), "")
            .map_err(|e| fail(e.into()))?;
        options.extend([
            "--user".to_string(),
            format!("{}:{}", process.uid, process.gid),
        ]);
        for gid in process.additional_gids {
            options.extend(["--additional-gids".to_string(), gid.to_string()]);
        }
    }
    if !args.interactive {
        // docker exec without -i gives the command no stdin.
        let null = std::fs::File::open("/dev/null")
            .context("open /dev/null")
            .map_err(fail)?;
        nix::unistd::dup2_stdin(null)
            .context("close stdin")
            .map_err(fail)?;
    }
    let log = dir.join(format!("exec-{}.log", std::process::id()));
    let runc = Runc::new(root.join("runc"));
    let result = runc.exec(&record.id, &log, &options, &args.command);
    let _ = std::fs::remove_file(&log);
    result.map_err(|e| {
        let code = e.exit_code();
        anyhow!(e).context(RunFailed(code))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_commands_read_like_docker_ps() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(42), "42 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(3 * 60), "3 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(
            ellipsis("sh -c 'while true; do echo x; done'", 20),
            "sh -c 'while true; …"
        );
        assert_eq!(ellipsis("true", 20), "true");
    }

    /// runc forgets a container as soon as its process has exited, while the supervisor may
    /// still hold the lock for a moment before it records the exit: `rm -f` and `stop` must
    /// wait for that record rather than fail on the refused signal.
    #[test]
    fn a_container_exiting_while_it_is_signalled_is_stopped_not_an_error() {
        use std::os::fd::AsRawFd;
        let root = tempfile::tempdir().unwrap();
        let root = root.path().to_path_buf();
        let id = "cd".repeat(32);
        let dir = root.join("containers").join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        let record = Record {
            id: id.clone(),
            name: "exiting".into(),
            image: "busybox".into(),
            image_id: "sha256:aa".into(),
            command: vec!["sleep".into(), "60".into()],
            created: container::now(),
            status: Status::Running,
            pid: Some(i32::MAX),
            exit_code: None,
            error: None,
            started_at: Some(container::now()),
            finished_at: None,
            auto_remove: false,
            detached: true,
            lowers: Vec::new(),
        };
        record.save(&root).unwrap();
        // no runc state for the ID: `runc kill` is refused (or runc is missing)
        let runc = Runc::new(root.join("runc"));
        for stopper in ["rm -f", "stop"] {
            let lock = std::fs::File::create(dir.join("lock")).unwrap();
            // SAFETY: flock only reads the descriptor number, which `lock` keeps open.
            assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
            let supervisor = std::thread::spawn({
                let (root, mut record) = (root.clone(), record.clone());
                move || {
                    std::thread::sleep(Duration::from_millis(300));
                    record.status = Status::Exited;
                    record.exit_code = Some(137);
                    record.save(&root).unwrap();
                    drop(lock);
                }
            });
            let started = Instant::now();
            let stopped = match stopper {
                "stop" => stop_one(&root, &runc, &record, Duration::from_secs(5)),
                _ => kill_and_wait(&root, &runc, &record),
            };
            supervisor.join().unwrap();
            assert!(stopped.is_ok(), "{stopper}: {stopped:?}");
            assert!(started.elapsed() < Duration::from_secs(3), "{stopper}");
            assert_eq!(Record::load(&root, &id).unwrap().exit_code, Some(137));
            // running again for the next stopper
            record.save(&root).unwrap();
        }
    }
}
