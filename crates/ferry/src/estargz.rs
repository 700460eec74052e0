//! `ferry image convert --estargz` and `ferry push --estargz`: layers rewritten as eStargz
//! (the work is in ferry-estargz and ferry-distribution's converter).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use ferry_distribution::{ConvertEvent, EstargzOptions};
use ferry_oci::{media, Descriptor, Platform};

use crate::commands::find_image;
use crate::context::Context;
use crate::progress::{Mode, Progress};

/// The eStargz flags of `image convert` and `push` (nerdctl's and ctr-remote's names).
#[derive(Args, Clone, Debug)]
pub struct EstargzArgs {
    /// Convert the layers to eStargz: gzip members per file and per chunk, a table of contents
    /// (stargz.index.json) and a footer, so a lazy snapshotter can fetch single files. Any
    /// gzip reader still reads the layers.
    #[arg(long)]
    pub estargz: bool,
    /// Put these files first, to be prefetched: a file of JSON lines {"path": "/usr/bin/python3"}
    /// as ctr-remote's recorder writes. Without it, nothing is prefetched.
    #[arg(long, value_name = "FILE", requires = "estargz")]
    pub estargz_record_in: Option<PathBuf>,
    /// gzip level of the eStargz layers, 0 (store) to 9 (best).
    #[arg(long, value_name = "N", default_value_t = ferry_estargz::DEFAULT_COMPRESSION_LEVEL,
          requires = "estargz", value_parser = clap::value_parser!(u32).range(0..=9))]
    pub estargz_compression_level: u32,
    /// Bytes per chunk of a large file; each chunk is fetched and verified on its own. Tiny
    /// chunks make a TOC larger than readers accept (50 MiB), which is refused.
    #[arg(long, value_name = "BYTES", default_value_t = ferry_estargz::DEFAULT_CHUNK_SIZE,
          requires = "estargz", value_parser = clap::value_parser!(u64).range(1..))]
    pub estargz_chunk_size: u64,
}

/// `ferry image convert`.
#[derive(Args)]
#[command(after_help = "\
Examples:
  ferry image convert --estargz --oci debian:12 debian:12-esgz
  ferry image convert --estargz --oci --estargz-record-in record.json python:3 python:3-esgz
  ferry push --estargz ipfs://debian:12                   # convert for this push only

Layers that already are eStargz (their descriptor names a TOC digest, and the TOC and every
chunk check out) are kept as they are; the others are rebuilt, and the config gets their new
diff_ids. New layers carry the annotations containerd.io/snapshot/stargz/toc.digest and
io.containers.estargz.uncompressed-size. Manifests with a converted layer are always written
with OCI media types, since Docker's cannot carry layer annotations (nerdctl would keep
Docker's and lose the TOC digest); --oci also converts manifests where every layer was kept.
The result runs as any image does, and docker-registry, skopeo and containerd pull it.")]
pub struct ConvertArgs {
    #[command(flatten)]
    pub estargz: EstargzArgs,
    /// Write OCI media types everywhere, also in manifests whose layers were all kept.
    #[arg(long)]
    pub oci: bool,
    /// Convert only this platform's manifest (os/arch[/variant]; default: the host's).
    #[arg(long, value_name = "OS/ARCH", conflicts_with = "all_platforms")]
    pub platform: Option<String>,
    /// Convert every platform of a multi-platform image.
    #[arg(long)]
    pub all_platforms: bool,
    /// Print only the new image's digest.
    #[arg(short, long)]
    pub quiet: bool,
    /// The local image to convert.
    pub src: String,
    /// The name of the converted image.
    pub dst: String,
}

/// `ferry image convert --estargz SRC DST`.
pub async fn convert(ctx: &Context, args: &ConvertArgs) -> Result<()> {
    if !args.estargz.estargz {
        bail!("image convert: nothing to convert to: pass --estargz");
    }
    let dst: ferry_oci::Reference = args.dst.parse()?;
    if matches!(dst, ferry_oci::Reference::Ipfs(_)) {
        bail!(
            "image convert {}: an IPFS name is the image's CID; convert to a local name, then \
             `ferry push ipfs://NAME`",
            args.dst
        );
    }
    let image = find_image(&ctx.store, &args.src)?;
    if !args.oci && is_docker(&image.target) {
        tracing::warn!(
            "--estargz without --oci: the converted manifests use OCI media types anyway \
             (Docker's cannot carry the TOC digest annotation)"
        );
    }
    let platform = match (&args.platform, args.all_platforms) {
        (_, true) => None,
        (Some(p), false) => Some(crate::images::parse_platform(p)?),
        (None, false) => Some(Platform::host()),
    };
    let target = run(
        ctx,
        &image.target,
        &args.estargz,
        args.oci,
        platform,
        args.quiet,
    )
    .await
    .with_context(|| format!("convert {}", args.src))?;
    ctx.store.put_image(&dst.image_name(), &target)?;
    outln!("{}", target.digest);
    Ok(())
}

/// `push --estargz`: the image converted for this push (unchanged without the flag).
pub async fn for_push(
    ctx: &Context,
    target: Descriptor,
    args: &EstargzArgs,
    platform: Option<Platform>,
    quiet: bool,
) -> Result<Descriptor> {
    if !args.estargz {
        return Ok(target);
    }
    run(ctx, &target, args, true, platform, quiet).await
}

/// Converts in a blocking task, one progress line per layer.
async fn run(
    ctx: &Context,
    target: &Descriptor,
    args: &EstargzArgs,
    oci: bool,
    platform: Option<Platform>,
    quiet: bool,
) -> Result<Descriptor> {
    let prioritized = match &args.estargz_record_in {
        Some(path) => read_record(path)?,
        None => Vec::new(),
    };
    let opts = EstargzOptions {
        build: ferry_estargz::BuildOptions {
            chunk_size: args.estargz_chunk_size,
            compression_level: args.estargz_compression_level,
            prioritized,
            spool_dir: None,
        },
        oci,
    };
    let display = Arc::new(Progress::new(Mode::detect(quiet)));
    let shown = display.clone();
    let store = ctx.store.clone();
    let target = target.clone();
    let converted = tokio::task::spawn_blocking(move || {
        let progress = |event: ConvertEvent| show(&shown, event);
        ferry_distribution::convert_estargz(&store, &target, &opts, platform.as_ref(), &progress)
    })
    .await?;
    display.finish();
    Ok(converted?)
}

fn show(display: &Progress, event: ConvertEvent) {
    match event {
        ConvertEvent::Reused { layer } => display.note(&format!(
            "reusing eStargz layer {} without conversion",
            layer.digest
        )),
        ConvertEvent::NotReusable { layer, why } => {
            tracing::warn!(layer = %layer.digest, "not a valid eStargz layer, converting it again: {why}")
        }
        ConvertEvent::Converted { from, to, missing } => {
            if !missing.is_empty() {
                tracing::debug!(layer = %from.digest, ?missing, "prioritized files not in this layer");
            }
            display.note(&format!(
                "converted {:?} {} to eStargz {}",
                from.media_type, from.digest, to.digest
            ))
        }
    }
}

fn is_docker(target: &Descriptor) -> bool {
    target.media_type == media::DOCKER_MANIFEST || target.media_type == media::DOCKER_MANIFEST_LIST
}

/// The paths of a record file (JSON values `{"path": ...}` one after another), first
/// occurrence first, as ctr-remote reads `--estargz-record-in`.
fn read_record(path: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Entry {
        path: String,
    }
    let file = std::fs::File::open(path)
        .with_context(|| format!("--estargz-record-in {}", path.display()))?;
    let mut seen = std::collections::HashSet::new();
    let mut paths = Vec::new();
    let entries = serde_json::Deserializer::from_reader(std::io::BufReader::new(file));
    for entry in entries.into_iter::<Entry>() {
        let entry = entry.with_context(|| format!("--estargz-record-in {}", path.display()))?;
        if seen.insert(entry.path.clone()) {
            paths.push(entry.path);
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    #[test]
    fn record_files_read_as_ctr_remote_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("record.json");
        let text = "{\"path\":\"/bin/sh\",\"manifestDigest\":\"sha256:aa\",\"layerIndex\":0}\n\
                    {\"path\":\"/etc/passwd\"}\n{\"path\":\"/bin/sh\"}\n";
        std::fs::write(&file, text).unwrap();
        assert_eq!(
            super::read_record(&file).unwrap(),
            ["/bin/sh", "/etc/passwd"]
        );
        std::fs::write(&file, "{\"nope\":1}").unwrap();
        let err = format!("{:#}", super::read_record(&file).unwrap_err());
        assert!(
            err.starts_with(&format!(
                "--estargz-record-in {}: missing field `path`",
                file.display()
            )),
            "{err}"
        );
    }
}
