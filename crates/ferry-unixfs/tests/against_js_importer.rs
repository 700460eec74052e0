//! ferry's importer against ipfs-unixfs-importer (the JS importer Helia uses), driven by the
//! shared `add-cid.mjs` with kubo's `--cid-version=1` settings.
//!
//! Needs `node` and the packages that `scripts/install-peers.sh` puts in `target/peers`.
//! Without them each test prints a SKIP reason and passes, unless `FERRY_REQUIRE_PEERS` is set
//! (CI sets it), in which case it fails.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_unixfs::{ImportedBlock, Importer, Profile};

const CHUNK: u64 = 262_144;

/// The workspace root: this crate sits at `crates/ferry-unixfs`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where `add-cid.mjs` can run, or why it cannot.
///
/// Node's ESM loader ignores `NODE_PATH`, so the script is copied next to
/// `target/peers/node_modules`, where bare imports resolve.
fn peer_script() -> Result<PathBuf, String> {
    let root = workspace_root();
    let shared = root.join("../shared/peers/add-cid.mjs");
    let peers = root.join("target/peers");

    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|out| out.status.success()) {
        return Err("node is not installed".into());
    }
    for package in ["ipfs-unixfs-importer", "blockstore-core"] {
        if !peers
            .join("node_modules")
            .join(package)
            .join("package.json")
            .is_file()
        {
            return Err(format!(
                "{package} is missing: run scripts/install-peers.sh"
            ));
        }
    }
    if !shared.is_file() {
        return Err(format!("{} not found", shared.display()));
    }

    // Copy under a unique name, then rename: tests run in parallel threads and processes.
    let script = peers.join("add-cid.mjs");
    let partial = peers.join(format!(
        "add-cid.mjs.{}.{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    fs::copy(&shared, &partial).map_err(|e| format!("copy {}: {e}", shared.display()))?;
    fs::rename(&partial, &script).map_err(|e| format!("rename to {}: {e}", script.display()))?;
    Ok(script)
}

/// What add-cid.mjs reports: root CID, cumulative size of the root, distinct blocks.
struct JsResult {
    cid: String,
    size: u64,
    blocks: usize,
}

/// Runs `node add-cid.mjs --gen len OUT` and parses its output.
fn js_generate(script: &Path, len: u64, out: &Path) -> JsResult {
    let peers = workspace_root().join("target/peers");
    let output = Command::new("node")
        .arg(script)
        .args(["--gen", &len.to_string()])
        .arg(out)
        .env("NODE_PATH", peers.join("node_modules"))
        .output()
        .expect("node runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "add-cid.mjs --gen {len} failed: {stderr}"
    );

    // stderr: `size=<cumulative size> blocks=<distinct blocks>`
    let field = |name: &str| -> u64 {
        let text = stderr.split_whitespace().find_map(|w| w.strip_prefix(name));
        text.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {stderr:?}"))
    };
    JsResult {
        cid: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        size: field("size="),
        blocks: field("blocks=") as usize,
    }
}

/// Imports `path` with ferry, reading it in odd-sized slices, and reports the same three
/// figures as add-cid.mjs plus the file size.
fn ferry_import(path: &Path) -> (JsResult, u64) {
    let mut file = File::open(path).expect("generated file opens");
    let mut buf = vec![0u8; 1_000_003];
    let mut importer = Importer::new(Profile::KUBO_V1);
    let mut cids = HashSet::new();
    let mut cumulative = 0u64;
    let mut sink = |block: ImportedBlock<'_>| {
        let (cid, len) = match block {
            ImportedBlock::Leaf { cid, data, .. } => (cid, data.len()),
            ImportedBlock::Node { cid, data } => (cid, data.len()),
        };
        cids.insert(cid);
        cumulative += len as u64;
    };

    loop {
        let n = file.read(&mut buf).expect("generated file reads");
        if n == 0 {
            break;
        }
        importer.write(&buf[..n], &mut sink);
    }
    let (root, size) = importer.finish(&mut sink);

    let result = JsResult {
        cid: root.to_string(),
        size: cumulative,
        blocks: cids.len(),
    };
    (result, size)
}

/// Generates `len` bytes with add-cid.mjs and checks ferry gets the same CID and block set.
fn compare_with_js(len: u64) {
    let script = match peer_script() {
        Ok(script) => script,
        Err(reason) if std::env::var_os("FERRY_REQUIRE_PEERS").is_none() => {
            eprintln!("SKIP against_js_importer ({len} bytes): {reason}");
            return;
        }
        Err(reason) => panic!("FERRY_REQUIRE_PEERS is set but {reason}"),
    };

    let dir = workspace_root().join("target/peers/tmp");
    fs::create_dir_all(&dir).expect("create target/peers/tmp");
    let file = dir.join(format!("gen-{len}-{}", std::process::id()));
    let js = js_generate(&script, len, &file);
    let (ferry, size) = ferry_import(&file);
    let _ = fs::remove_file(&file);

    assert_eq!(size, len, "file size of {len} bytes");
    assert_eq!(ferry.cid, js.cid, "root CID of {len} bytes");
    // The generated bytes never repeat a chunk, so the cumulative size is every block's length.
    assert_eq!(ferry.size, js.size, "cumulative size of {len} bytes");
    assert_eq!(ferry.blocks, js.blocks, "block count of {len} bytes");
}

#[test]
fn empty_file_matches_js_importer() {
    compare_with_js(0);
}

#[test]
fn one_byte_matches_js_importer() {
    compare_with_js(1);
}

#[test]
fn one_byte_short_of_a_chunk_matches_js_importer() {
    compare_with_js(CHUNK - 1);
}

#[test]
fn exactly_one_chunk_matches_js_importer() {
    compare_with_js(CHUNK);
}

#[test]
fn one_chunk_and_one_byte_matches_js_importer() {
    compare_with_js(CHUNK + 1);
}

#[test]
fn one_full_174_link_node_matches_js_importer() {
    compare_with_js(174 * CHUNK);
}

#[test]
fn two_level_dag_matches_js_importer() {
    compare_with_js(174 * CHUNK + 1);
}

#[test]
fn fifty_mib_matches_js_importer() {
    compare_with_js(50 << 20);
}
