#!/usr/bin/env bash
# Build Hiber's two Debian packages, hiber and hiber-gtk, into target/debian/
# (docs/packaging.md says what each holds), then check them with lintian.
#
#   bash packaging/build-deb.sh           release build, lintian
#   bash packaging/build-deb.sh --dev     the test suite's: package the debug
#                                         binaries `cargo build --workspace`
#                                         made (target/debug), build nothing,
#                                         into target/debian/dev/, no lintian
#   ... --no-lintian                      skip lintian
#
# It installs what it needs: the Debian packages in deb-build-packages.txt
# and a Rust toolchain (through install-deps.sh), and cargo-deb (cargo
# install, from crates.io).
#
# Why cargo-deb and not debhelper: Hiber is a Cargo workspace whose
# binaries cargo already builds; cargo-deb reads the package metadata from
# the crates' Cargo.toml ([package.metadata.deb] in dbus/ for hiber, gui/
# for hiber-gtk: the files packaging/ already holds, listed as assets, none
# copied), computes Depends with dpkg-shlibdeps ($auto), strips, marks
# /etc files as conffiles, and writes the .deb without a source package.
# debhelper would need a debian/ directory at the top of the tree (rules,
# control, compat, a source package) only to call cargo and install the
# same files; its gain, generated maintainer scripts for the systemd unit,
# does not apply to a unit that the bus starts and nothing enables, and
# hiber's scripts (packaging/debian/hiber/) must also stop hiberd where no
# systemd runs. The price: cargo-deb is built from source once per machine
# (about 3 minutes on 2 cores).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# The cargo-deb this script was written and checked with.
CARGO_DEB_VERSION=3.8.0

dev=0
lintian=1
for a in "$@"; do
    case "$a" in
        --dev) dev=1 lintian=0 ;;
        --no-lintian) lintian=0 ;;
        -h | --help)
            sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "build-deb: unknown argument '$a' (build-deb.sh [--dev] [--no-lintian])" >&2
            exit 2
            ;;
    esac
done

say() { printf 'build-deb: %s\n' "$*"; }

bash packaging/install-deps.sh "$root/packaging/deb-build-packages.txt"
home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
export PATH="$home/.cargo/bin:$PATH"

if [ "$(cargo deb --version 2>/dev/null | awk '{print $2}')" != "$CARGO_DEB_VERSION" ]; then
    say "installing cargo-deb $CARGO_DEB_VERSION (cargo install)"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

if [ "$dev" = 1 ]; then
    profile=dev
    bindir=target/debug
    out=target/debian/dev
    # The system's gzip -1: seconds where xz takes half a minute per
    # package on 2 cores (and cargo-deb's own gzip a minute).
    deb_args=(--profile dev --compress-type gz --fast --compress-system)
    for b in hiber hiberd hiber-gtk; do
        if [ ! -x "$bindir/$b" ]; then
            say "$bindir/$b is missing: run 'cargo build --workspace --all-targets' first" >&2
            exit 1
        fi
    done
else
    profile=release
    bindir=target/release
    out=target/debian
    deb_args=()
    # The C parts (zstd's bundled sources, compiled by the cc crate) get
    # Debian's hardening flags (fortify, stack protector), as lintian asks.
    CFLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
    LDFLAGS="$(dpkg-buildflags --get LDFLAGS)"
    export CFLAGS LDFLAGS
    say "cargo build --release (hiber, hiberd, hiber-gtk)"
    cargo build --release --locked -p hiber-session -p hiber-dbus -p hiber-gui --bins
fi

mkdir -p "$out"
rm -f "$out"/hiber_*.deb "$out"/hiber-gtk_*.deb
if [ "$dev" = 1 ]; then
    # cargo-deb deletes the packages of the same names from target/debian/,
    # whatever -o says: keep the release ones out of its way meanwhile.
    stash="$(mktemp -d)"
    # `|| true`: errexit holds in the trap, and on a fresh clone there is
    # nothing to put back (the glob stays literal and mv fails).
    trap 'mv "$stash"/*.deb target/debian/ 2>/dev/null || true; rm -rf "$stash"' EXIT
    mv target/debian/hiber_*.deb target/debian/hiber-gtk_*.deb "$stash"/ 2>/dev/null || true
fi
for crate in hiber-dbus hiber-gui; do
    # --no-build: the binaries of both crates (and hiber-session's `hiber`)
    # come from the one cargo build above, not one build per package.
    cargo deb --no-build --locked -p "$crate" --strip --no-separate-debug-symbols \
        --no-dbgsym ${deb_args[@]+"${deb_args[@]}"} -o "$out/"
done

debs=("$out"/hiber_*.deb "$out"/hiber-gtk_*.deb)

# cargo-deb writes no DEBIAN/md5sums, which `dpkg --verify` and debsums
# check installed files against: add it (conffiles left out, as
# dh_md5sums does: dpkg keeps their sums itself) and pack again.
add_md5sums() {
    local deb=$1 tree
    tree="$(mktemp -d)"
    chmod 0755 "$tree"
    dpkg-deb --raw-extract "$deb" "$tree"
    (
        cd "$tree"
        find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
            grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles 2>/dev/null || true) |
            tr '\n' '\0' | xargs -0 --no-run-if-empty md5sum >DEBIAN/md5sums
    )
    chmod 0644 "$tree/DEBIAN/md5sums"
    if [ "$dev" = 1 ]; then
        dpkg-deb --root-owner-group -Zgzip -z1 --build "$tree" "$deb" >/dev/null
    else
        dpkg-deb --root-owner-group -Zxz --build "$tree" "$deb" >/dev/null
    fi
    rm -rf "$tree"
}

for d in "${debs[@]}"; do
    add_md5sums "$d"
    say "built $d ($(du -h "$d" | cut -f1), $profile profile)"
done

if [ "$lintian" = 1 ]; then
    say "lintian ${debs[*]}"
    # Errors and warnings fail the build; each one left is overridden, with
    # its reason, in packaging/debian/*.lintian-overrides.
    lintian --fail-on error,warning --info --display-level '>=pedantic' "${debs[@]}"
fi
