#!/bin/bash
# Fuzz the image readers: the document parser and the pack reader
# (core/fuzz, cargo-fuzz with libFuzzer), SECONDS each (default 60), one
# after the other on one core. Installs cargo-fuzz when missing; a stable
# toolchain does, with RUSTC_BOOTSTRAP=1 standing in for nightly.
#
#   bash packaging/fuzz.sh [SECONDS]
#
# New inputs go to core/fuzz/corpus/TARGET (not committed), crashes and
# hangs to core/fuzz/artifacts/TARGET; the checked-in seeds are in
# core/fuzz/seeds/TARGET. A crash reproduces with
#   cd core/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O -a TARGET artifacts/TARGET/FILE
set -euo pipefail
seconds=${1:-60}
cd "$(dirname "$0")/../core/fuzz"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# Longest inputs: a document of a few processes, a pack of a few chunks.
declare -A max_len=([document]=65536 [pack]=32768)
for target in document pack; do
    mkdir -p "corpus/$target"
    echo "fuzzing $target for ${seconds}s"
    # -timeout: an input that takes 10 s is a hang, reported as a finding.
    cargo fuzz run -O --debug-assertions "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len="${max_len[$target]}" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
