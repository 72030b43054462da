#!/usr/bin/env bash
# Install what is needed, then run every check CI runs: formatting, clippy,
# the build of every target, and the whole test suite.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash packaging/install-deps.sh
if [ -f "${HOME:-/root}/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "${HOME:-/root}/.cargo/env"
fi

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --all --check"
cargo fmt --all --check
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets
step "cargo test --workspace -- --test-threads=2"
cargo test --workspace -- --test-threads=2
