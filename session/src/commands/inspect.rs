//! `hiber inspect`: what an image holds.

use anyhow::{Context, Result};
use hiber_core::files::FileKind;
use hiber_core::image::ImageReader;
use hiber_core::memory::Backing;
use hiber_core::Snapshot;
use hiber_session::desktop::DesktopRecord;
use hiber_session::display_session;
use hiber_session::format;
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, Serialize)]
struct Summary<'a> {
    dir: &'a Path,
    format_version: u32,
    snapshot: &'a Snapshot,
    chunks: usize,
    data_bytes: u64,
    verified: bool,
}

/// The recorded windows, bottom of the stack first, and where the
/// screenshots were written when asked.
/// The screenshots' bytes are read only when they are written out.
fn print_desktop(
    reader: &ImageReader,
    snap: &Snapshot,
    record: &DesktopRecord,
    screenshots: Option<&Path>,
) -> Result<()> {
    println!(
        "\ndesktop of display {}: {} windows (bottom of the stack first)",
        record.display,
        record.windows.len()
    );
    let mut windows: Vec<_> = record.windows.iter().collect();
    windows.sort_by_key(|w| (w.screen, w.stacking));
    for w in windows {
        println!(
            "  {:#010x} {:<9} {}x{}+{}+{} pid {:<7} {:?} ({})",
            w.id,
            if w.mapped { "mapped" } else { "unmapped" },
            w.width,
            w.height,
            w.x,
            w.y,
            w.pid.map_or("-".into(), |p| p.to_string()),
            w.title.as_deref().unwrap_or(""),
            w.class.as_deref().unwrap_or("-"),
        );
    }
    match screenshots {
        Some(out) => {
            let pngs = display_session::stored_screenshots(reader, snap).with_context(|| {
                format!("reading the screenshots of {}", reader.dir().display())
            })?;
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            for (name, png) in pngs {
                let path = out.join(&name);
                std::fs::write(&path, &png)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!(
                    "  {name}: {} written to {}",
                    format::bytes(png.len() as u64),
                    path.display()
                );
            }
        }
        None => {
            for a in snap
                .attachments
                .iter()
                .filter(|a| a.media_type == "image/png")
            {
                println!(
                    "  {}: {} (--screenshots DIR writes it out)",
                    a.name,
                    format::bytes(a.len)
                );
            }
        }
    }
    Ok(())
}

pub fn run(dir: &Path, json: bool, verify: bool, screenshots: Option<&Path>) -> Result<ExitCode> {
    let (reader, snap): (ImageReader, Snapshot) =
        ImageReader::open(dir).with_context(|| format!("opening image {}", dir.display()))?;
    // The checks restore makes of the document alone: what is printed
    // below may index and size by it.
    hiber_core::restore::validate::document(&snap)
        .with_context(|| format!("invalid image {}", dir.display()))?;
    let chunks = snap.chunks();
    reader
        .check_chunks(chunks.iter().copied())
        .with_context(|| format!("checking the chunks of {}", dir.display()))?;
    if verify {
        let mut buf = Vec::new();
        for c in &chunks {
            reader
                .read_chunk(c, &mut buf)
                .with_context(|| format!("verifying {}", dir.display()))?;
        }
    }
    let data_bytes: u64 = chunks.iter().map(|c| c.raw_len as u64).sum();
    if json {
        let s = Summary {
            dir,
            format_version: reader.version(),
            snapshot: &snap,
            chunks: chunks.len(),
            data_bytes,
            verified: verify,
        };
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "image {} (format {}), saved on {} ({}) at unix time {} by hiber {}",
        dir.display(),
        reader.version(),
        snap.hostname,
        snap.kernel,
        snap.created_unix,
        snap.hiber_version
    );
    println!(
        "{} processes, {} open files, {} pipes, {} shared memory objects; {} chunks, {} of data{}",
        snap.processes.len(),
        snap.files.len(),
        snap.pipes.len(),
        snap.shmem.len(),
        chunks.len(),
        format::bytes(data_bytes),
        if verify { ", every chunk verified" } else { "" }
    );
    if let Some(record) = display_session::stored_record(&reader, &snap)
        .with_context(|| format!("reading the desktop record of {}", dir.display()))?
    {
        print_desktop(&reader, &snap, &record, screenshots)?;
    }
    for p in &snap.processes {
        let zombie = p
            .zombie_status
            .map(|s| format!(" zombie (status {s:#x})"))
            .unwrap_or_default();
        println!(
            "\npid {} {}{} parent {} group {} session {} uid {}",
            p.pid, p.comm, zombie, p.ppid, p.pgid, p.sid, p.creds.uid[0]
        );
        if p.zombie_status.is_some() {
            continue;
        }
        println!("  cwd {}", p.cwd.display());
        for f in &p.fds {
            // Validated above; looked up defensively all the same.
            let Some(file) = snap.files.get(f.file) else {
                anyhow::bail!(
                    "pid {} fd {} refers to file {}, which the image does not contain",
                    p.pid,
                    f.fd,
                    f.file
                );
            };
            let extra = match &file.kind {
                FileKind::Regular(r) => format!(" offset {}", r.pos),
                FileKind::Pipe(e) => match snap.pipes.get(e.pipe) {
                    Some(pipe) => format!(" ({} bytes queued)", pipe.data_len),
                    None => anyhow::bail!(
                        "file {} refers to pipe {}, which the image does not contain",
                        f.file,
                        e.pipe
                    ),
                },
                _ => String::new(),
            };
            println!(
                "  fd {:<4} {} [{}] flags {:#o}{}",
                f.fd,
                file.kind.describe(),
                file.kind.policy(),
                file.flags,
                extra
            );
        }
        if let Some(mm) = &p.mm {
            for v in &mm.vmas {
                let stored: u64 = v.pages.iter().map(|c| c.chunk.raw_len as u64).sum();
                let what = match &v.backing {
                    Backing::Anon => "anon".to_string(),
                    Backing::File { path, .. } => path.display().to_string(),
                    Backing::Shmem { object, .. } => format!("shared object {object}"),
                    Backing::Vdso => "[vdso]".into(),
                    Backing::Vvar => "[vvar]".into(),
                    Backing::VvarVclock => "[vvar_vclock]".into(),
                    Backing::Device {
                        path, major, minor, ..
                    } => format!("{} ({major}:{minor}), detached", path.display()),
                };
                let prot = format!(
                    "{}{}{}{}",
                    if v.read { 'r' } else { '-' },
                    if v.write { 'w' } else { '-' },
                    if v.exec { 'x' } else { '-' },
                    if v.shared { 's' } else { 'p' }
                );
                println!(
                    "  {:012x}-{:012x} {prot} {:>10} saved {:>10}  {what}",
                    v.start,
                    v.end,
                    format::bytes(v.len()),
                    format::bytes(stored)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
