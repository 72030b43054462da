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

#[test]
fn metainfo_validates() {
    validates(
        &["appstreamcli", "validate", "--no-net"],
        &packaging().join("org.hiber.Hiber.metainfo.xml"),
    );
}
