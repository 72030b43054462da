#!/usr/bin/env bash
# Build hiber and run its demonstration: a python3 program saved, ended,
# restored and shown going on. Needs root (ptrace of the program).
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
