#!/usr/bin/env bash
# Build hiber and run its demonstration: an X session (Xvfb, a session bus,
# GTK and X programs, a terminal whose shell counts) saved by its display,
# ended, restored and shown going on. Needs root (ptrace of the programs).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash packaging/install-deps.sh
if [ -f "${HOME:-/root}/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "${HOME:-/root}/.cargo/env"
fi

cargo build --release -p hiber-session
target/release/hiber demo "$@"
