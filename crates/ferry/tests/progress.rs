//! Progress of pulls and pushes: plain lines (one per change of state of each blob) when stderr
//! is not a terminal, rows redrawn in place on a terminal (driven through a real pty), nothing
//! with -q. The busybox fixture goes through a real docker-registry; the blob ids to expect
//! come from skopeo reading the fixture.

mod common;

use std::path::Path;
use std::process::Command;

use common::{ferry, fixture, ok, on_a_pty, output, tool_installed, Registry};

fn tools(test: &str) -> bool {
    tool_installed(test, "skopeo") && tool_installed(test, "docker-registry")
}

/// The busybox fixture's config and layer: (`sha256:` + 12 hex digits, size text), as skopeo
/// reads the archive; and the manifest digest and size.
fn busybox_blobs() -> (Vec<(String, String)>, String, usize) {
    let archive = format!("oci-archive:{}", fixture("busybox.tar").display());
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", &archive])
        .output()
        .unwrap();
    assert!(out.status.success());
    let raw: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &out.stdout).unwrap();
    let manifest = format!("sha256:{}", common::sha256sum(file.path()));
    let blob = |d: &serde_json::Value| {
        let digest = d["digest"].as_str().unwrap();
        let size = d["size"].as_u64().unwrap();
        (digest[..19].to_string(), size_text(size))
    };
    (
        vec![blob(&raw["config"]), blob(&raw["layers"][0])],
        manifest,
        out.stdout.len(),
    )
}

/// Sizes as docker prints them (what ferry's lines say).
fn size_text(bytes: u64) -> String {
    match bytes {
        0..=999 => format!("{bytes}B"),
        _ => {
            let text = format!("{:.3}", bytes as f64 / 1e6);
            format!("{}MB", text.trim_end_matches('0').trim_end_matches('.'))
        }
    }
}

/// The busybox fixture pushed to a fresh registry; returns the image name there.
fn pushed(registry: &Registry, root: &Path) -> String {
    let name = format!("{}/busybox:1", registry.addr);
    ok(ferry(root).args(["load", "-i"]).arg(fixture("busybox.tar")));
    ok(ferry(root).args(["tag", "busybox", &name]));
    name
}

fn sorted(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines.sort();
    lines
}

#[test]
fn pull_and_push_print_one_line_per_state_change_when_not_on_a_terminal() {
    let test = "pull_and_push_print_one_line_per_state_change_when_not_on_a_terminal";
    if !tools(test) {
        return;
    }
    let Some(registry) = Registry::start() else {
        return;
    };
    let (blobs, manifest, manifest_size) = busybox_blobs();
    let root = tempfile::tempdir().unwrap();
    let name = pushed(&registry, root.path());

    let (code, stdout, stderr) = output(ferry(root.path()).args(["push", &name]));
    assert_eq!(code, 0, "{stderr}");
    let mut want: Vec<String> = blobs
        .iter()
        .flat_map(|(id, size)| [format!("{id}: Pushing {size}"), format!("{id}: Pushed")])
        .collect();
    want.sort();
    assert_eq!(sorted(&stderr), want);
    for (id, size) in &blobs {
        // Each blob's lines come in the order of its states.
        let mine: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with(id.as_str()))
            .collect();
        assert_eq!(
            mine,
            [format!("{id}: Pushing {size}"), format!("{id}: Pushed")]
        );
    }
    assert_eq!(
        stdout,
        format!("1: digest: {manifest} size: {manifest_size}\n")
    );
    let (_, _, stderr) = output(ferry(root.path()).args(["push", &name]));
    let mut want: Vec<String> = blobs
        .iter()
        .map(|(id, _)| format!("{id}: Layer already exists"))
        .collect();
    want.sort();
    assert_eq!(sorted(&stderr), want);

    let fresh = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = output(ferry(fresh.path()).args(["pull", &name]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, format!("{name}\n"));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines[0], format!("{name}: resolved {manifest}"));
    let mut want: Vec<String> = blobs
        .iter()
        .flat_map(|(id, size)| {
            [
                format!("{id}: Downloading {size}"),
                format!("{id}: Pull complete"),
            ]
        })
        .collect();
    want.push(lines[0].to_string());
    want.sort();
    assert_eq!(sorted(&stderr), want);
    for (id, size) in &blobs {
        let mine: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with(id.as_str()))
            .collect();
        assert_eq!(
            mine,
            [
                format!("{id}: Downloading {size}"),
                format!("{id}: Pull complete")
            ]
        );
    }

    // Pulled again: everything is here.
    let (_, _, stderr) = output(ferry(fresh.path()).args(["pull", &name]));
    let mut want: Vec<String> = blobs
        .iter()
        .map(|(id, _)| format!("{id}: Already exists"))
        .collect();
    want.push(format!("{name}: resolved {manifest}"));
    want.sort();
    assert_eq!(sorted(&stderr), want);

    // -q: the result only.
    let quiet = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = output(ferry(quiet.path()).args(["pull", "-q", &name]));
    assert_eq!(
        (code, stdout, stderr),
        (0, format!("{name}\n"), String::new())
    );
}

/// The lines a terminal shows after `bytes`: a small emulator of what ferry sends (text, CR,
/// LF, cursor up `ESC [ n A`, erase line `ESC [ 2 K`).
fn screen(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                row += 1;
                if row == lines.len() {
                    lines.push(Vec::new());
                }
            }
            '\x1b' => {
                assert_eq!(chars.next(), Some('['), "an escape other than CSI");
                let mut arg = String::new();
                let command = loop {
                    let c = chars.next().expect("an unfinished escape sequence");
                    if c.is_ascii_digit() {
                        arg.push(c);
                    } else {
                        break c;
                    }
                };
                let n: usize = arg.parse().unwrap_or(1);
                match command {
                    'A' => row = row.saturating_sub(n),
                    'K' => lines[row].clear(),
                    other => panic!("unexpected escape sequence {arg}{other}"),
                }
            }
            c => {
                let line = &mut lines[row];
                if col < line.len() {
                    line[col] = c;
                } else {
                    line.resize(col, ' ');
                    line.push(c);
                }
                col += 1;
            }
        }
    }
    lines
        .into_iter()
        .map(|l| l.into_iter().collect::<String>())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn pull_on_a_terminal_redraws_rows_in_place_and_ends_with_pull_complete() {
    let test = "pull_on_a_terminal_redraws_rows_in_place_and_ends_with_pull_complete";
    if !tools(test) {
        return;
    }
    let Some(registry) = Registry::start() else {
        return;
    };
    let (blobs, manifest, _) = busybox_blobs();
    let root = tempfile::tempdir().unwrap();
    let name = pushed(&registry, root.path());
    ok(ferry(root.path()).args(["push", "-q", &name]));

    let fresh = tempfile::tempdir().unwrap();
    let mut cmd = ferry(fresh.path());
    cmd.args(["pull", &name]);
    let (code, raw) = on_a_pty(cmd);
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(code, 0, "{text}");
    // Rows were redrawn in place: the cursor went up over them.
    assert!(
        text.contains("\x1b[1A") || text.contains("\x1b[2A"),
        "{text:?}"
    );
    assert!(text.contains(": Downloading "), "{text:?}");
    let mut want = vec![format!("{name}: resolved {manifest}")];
    let mut rows: Vec<String> = blobs
        .iter()
        .map(|(id, _)| format!("{id}: Pull complete"))
        .collect();
    let shown = screen(&raw);
    // Rows appear in the order blobs started, which downloads running at once may swap.
    if shown.get(1) != Some(&rows[0]) {
        rows.reverse();
    }
    want.extend(rows);
    want.push(name.clone());
    assert_eq!(shown, want, "{text:?}");
}

#[test]
fn ipfs_push_and_pull_print_one_line_per_state_change() {
    if !tool_installed(
        "ipfs_push_and_pull_print_one_line_per_state_change",
        "skopeo",
    ) {
        return;
    }
    let (blobs, _, _) = busybox_blobs();
    let root = tempfile::tempdir().unwrap();
    ok(ferry(root.path())
        .args(["load", "-i"])
        .arg(fixture("busybox.tar")));
    let (code, cid, stderr) = output(ferry(root.path()).args(["push", "ipfs://busybox"]));
    assert_eq!(code, 0, "{stderr}");
    let mut lines: Vec<&str> = stderr.lines().collect();
    let last = lines.pop().unwrap();
    assert!(
        last.starts_with("docker.io/library/busybox:latest: pushed to IPFS in "),
        "{last}"
    );
    // The config and the layer are added as they are; their lines come in order.
    let mut want: Vec<String> = blobs
        .iter()
        .flat_map(|(id, size)| [format!("{id}: Pushing {size}"), format!("{id}: Pushed")])
        .collect();
    want.sort();
    lines.sort();
    assert_eq!(lines, want);

    let daemon = common::Daemon::start(root.path(), "/ip4/127.0.0.1/tcp/0", &["--no-mdns"]);
    let peer = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(ferry(peer.path()).args([
        "pull",
        "--peer",
        &daemon.addr,
        &format!("ipfs://{}", cid.trim()),
    ]));
    assert_eq!(code, 0, "{stderr}");
    // The manifest (re-encoded in IPFS, so known only here), then the layer and the config
    // (one blob at a time): each a Downloading line, then Pull complete.
    let inspect = ok(ferry(peer.path()).args(["image", "inspect", cid.trim()]));
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let manifest_desc = &inspect[0]["ManifestDescriptor"];
    let id = &manifest_desc["digest"].as_str().unwrap()[..19];
    let size = size_text(manifest_desc["size"].as_u64().unwrap());
    let mut want = vec![
        format!("{id}: Downloading {size}"),
        format!("{id}: Pull complete"),
    ];
    for (id, size) in blobs.iter().rev() {
        want.push(format!("{id}: Downloading {size}"));
        want.push(format!("{id}: Pull complete"));
    }
    assert_eq!(stderr.lines().collect::<Vec<_>>(), want);
}
