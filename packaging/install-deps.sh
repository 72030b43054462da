#!/usr/bin/env bash
# Install what building and testing Hiber needs on Debian 12: the packages
# listed in debian-packages.txt (apt) and a Rust toolchain (rustup).
# Usage: install-deps.sh [LIST] (another package list: build-deb.sh passes
# deb-build-packages.txt, what building the Debian packages needs).
# Idempotent: when everything is present it only checks and returns.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
list="${1:-$here/debian-packages.txt}"
home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"

say() { printf 'install-deps: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

# --- Debian packages -------------------------------------------------------
packages=()
while IFS= read -r line || [ -n "$line" ]; do
    line="${line%%#*}"
    line="$(printf '%s' "$line" | tr -d '[:space:]')"
    [ -n "$line" ] && packages+=("$line")
done <"$list"

missing=()
for p in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    if [ "$status" != "install ok installed" ]; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    say "all ${#packages[@]} Debian packages are installed"
else
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- Rust toolchain --------------------------------------------------------
if command -v cargo >/dev/null 2>&1; then
    say "cargo found: $(command -v cargo)"
elif [ -x "$home/.cargo/bin/cargo" ]; then
    say "cargo found: $home/.cargo/bin/cargo"
else
    say "installing Rust with rustup into $home/.cargo"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --component clippy,rustfmt
fi

# A toolchain installed earlier without clippy or rustfmt: add them.
export PATH="$home/.cargo/bin:$PATH"
if command -v rustup >/dev/null 2>&1; then
    cargo clippy --version >/dev/null 2>&1 || { say "adding rustup component clippy"; rustup component add clippy; }
    cargo fmt --version >/dev/null 2>&1 || { say "adding rustup component rustfmt"; rustup component add rustfmt; }
fi
say "using $(cargo --version)"
