//! What every command works in: the root directory, its store and its config file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use ferry_content::Store;
use ferry_ipfs::NodeConfig;

use crate::cli::SnapshotterKind;

/// The root of one ferry installation and its open store.
pub struct Context {
    pub root: PathBuf,
    pub store: Arc<Store>,
}

impl Context {
    /// Opens the root given by `--root` / `FERRY_ROOT`, else `/var/lib/ferry` for root and
    /// `$XDG_DATA_HOME/ferry` (or `~/.local/share/ferry`) for other users.
    pub fn open(root: Option<PathBuf>) -> Result<Context> {
        let root = root.unwrap_or_else(default_root);
        std::fs::create_dir_all(&root)
            .with_context(|| format!("create root {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("root {}", root.display()))?;
        let store = Store::open(&root).with_context(|| format!("open store {}", root.display()))?;
        Ok(Context {
            root,
            store: Arc::new(store),
        })
    }

    /// The node settings of ROOT/config.json (empty when there is none).
    pub fn node_config(&self) -> Result<NodeConfig> {
        read_config(&self.root.join("config.json"))
    }

    /// The control socket a running daemon listens on.
    pub fn socket_path(&self) -> PathBuf {
        self.root.join("ferry.sock")
    }

    /// The snapshotter `ferry run` uses when `--snapshotter` is not given: the `snapshotter`
    /// key of ROOT/config.json, else overlayfs.
    pub fn default_snapshotter(&self) -> Result<SnapshotterKind> {
        let path = self.root.join("config.json");
        let mut config = read_json(&path)?;
        match config.as_object_mut().and_then(|c| c.remove("snapshotter")) {
            None => Ok(SnapshotterKind::Overlayfs),
            Some(value) => serde_json::from_value(value).with_context(|| {
                format!(
                    "config {}: snapshotter must be \"overlayfs\" or \"stargz\"",
                    path.display()
                )
            }),
        }
    }
}

/// ROOT/config.json as JSON (an empty object when there is none).
fn read_json(path: &Path) -> Result<serde_json::Value> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("config {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(e) => Err(e).with_context(|| format!("config {}", path.display())),
    }
}

/// The node's part of ROOT/config.json (keys the CLI reads are left out).
fn read_config(path: &Path) -> Result<NodeConfig> {
    let mut config = read_json(path)?;
    if let Some(object) = config.as_object_mut() {
        object.remove("snapshotter");
    }
    serde_json::from_value(config).with_context(|| format!("config {}", path.display()))
}

fn default_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/ferry");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    data.unwrap_or_else(|| PathBuf::from(".")).join("ferry")
}
