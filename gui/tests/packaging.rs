//! Acceptance 5 of the app's issue: the packaged .desktop file and
//! AppStream metainfo pass their validators, and what they name exists
//! (the binary, the icons).

use std::path::{Path, PathBuf};
use std::process::Command;

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

#[track_caller]
fn validates(program: &[&str], file: &Path) {
    let out = Command::new(program[0])
        .args(&program[1..])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program[0]));
    assert!(
        out.status.success(),
        "{program:?} {file:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn desktop_file_validates_and_names_the_binary_and_icon() {
    let file = packaging().join("org.hiber.Hiber.desktop");
    validates(&["desktop-file-validate"], &file);
    let text = std::fs::read_to_string(&file).expect("reading the .desktop file");
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("Exec="))
        .expect("an Exec line");
    let binary = Path::new(env!("CARGO_BIN_EXE_hiber-gtk"));
    assert_eq!(
        exec.split_whitespace().next(),
        binary.file_name().and_then(|n| n.to_str()),
        "Exec names the app's binary"
    );
    let icon = text
        .lines()
        .find_map(|l| l.strip_prefix("Icon="))
        .expect("an Icon line");
    for (dir, suffix) in [("scalable", ""), ("symbolic", "-symbolic")] {
        let svg = packaging().join(format!("icons/hicolor/{dir}/apps/{icon}{suffix}.svg"));
        let text = std::fs::read_to_string(&svg).unwrap_or_else(|e| panic!("{svg:?}: {e}"));
        assert!(text.contains("<svg"), "{svg:?} is an SVG");
    }
}

/// The autostart entry (installed in /etc/xdg/autostart): valid, not in
/// menus, running the app's offer of a pending snapshot.
#[test]
fn autostart_entry_validates_and_runs_the_offer() {
    let file = packaging().join("org.hiber.Hiber-offer.desktop");
    validates(&["desktop-file-validate"], &file);
    let text = std::fs::read_to_string(&file).expect("reading the autostart entry");
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("Exec="))
        .expect("an Exec line");
    let binary = Path::new(env!("CARGO_BIN_EXE_hiber-gtk"));
    assert_eq!(
        exec.split_whitespace().collect::<Vec<_>>(),
        [
            binary.file_name().and_then(|n| n.to_str()).unwrap(),
            "--offer-pending"
        ],
        "Exec runs the app's offer"
    );
    assert!(text.lines().any(|l| l == "NoDisplay=true"), "{text}");
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("reading gui/Cargo.toml");
    assert!(
        manifest.contains(
            r#"["../packaging/org.hiber.Hiber-offer.desktop", "etc/xdg/autostart/", "644"]"#
        ),
        "the package installs it in /etc/xdg/autostart"
    );
}

#[test]
fn metainfo_validates() {
    validates(
        &["appstreamcli", "validate", "--no-net"],
        &packaging().join("org.hiber.Hiber.metainfo.xml"),
    );
}

/// The metainfo's screenshots are the repository's own PNGs (the URLs are
/// those files' raw addresses), with the sizes it declares.
#[test]
fn metainfo_screenshots_are_the_repository_s_pngs() {
    const RAW: &str = "https://raw.githubusercontent.com/hiber-project/hiber/main/";
    let text = std::fs::read_to_string(packaging().join("org.hiber.Hiber.metainfo.xml"))
        .expect("reading the metainfo");
    let images: Vec<&str> = text
        .split("<image ")
        .skip(1)
        .map(|rest| rest.split("</image>").next().unwrap_or_default())
        .collect();
    assert!(!images.is_empty(), "the metainfo has screenshots");
    let attr = |tag: &str, name: &str| -> u32 {
        let start = tag
            .find(&format!("{name}=\""))
            .unwrap_or_else(|| panic!("{name} in <image {tag}"))
            + name.len()
            + 2;
        tag[start..]
            .split('"')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} of <image {tag}"))
    };
    for image in images {
        let (tag, url) = image.split_once('>').expect("an <image> element");
        let path = url
            .strip_prefix(RAW)
            .unwrap_or_else(|| panic!("{url} is under {RAW}"));
        let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert_eq!(&bytes[1..4], b"PNG", "{} is a PNG", png.display());
        // The IHDR chunk: width and height, big-endian, at 16 and 20.
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        assert_eq!(
            (be(16), be(20)),
            (attr(tag, "width"), attr(tag, "height")),
            "{}'s size as the metainfo says",
            png.display()
        );
    }
}
