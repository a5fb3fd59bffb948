#!/usr/bin/env bash
# Build every distribution this machine can build into dist/ (or $1) and check each one:
#
#   ferrosmtp-X.tar.gz                                      the sdist
#   ferrosmtp-X-cp310-abi3-manylinux_2_17_x86_64.whl        built from that sdist
#   ferrosmtp-X-cp310-abi3-manylinux_2_17_aarch64.whl       cross-built
#   ferrosmtp-X-cp310-abi3-musllinux_1_2_x86_64.whl         cross-built
#   ferrosmtp-X-py3-none-any.whl                            the pure-Python fallback
#
# The binary wheels are linked by zig (`maturin --zig`, `ziglang` from PyPI) against old
# glibc symbol versions, so they install on RHEL 8, Debian 11, Ubuntu 20.04 and Alpine, not
# only on this machine's glibc 2.36. macOS, Windows and native aarch64 builds come from
# .github/workflows/release.yml. Needs the `wheels` dependency group in the active
# environment (pip install --group wheels) and rustup (the two cross targets are added).
#
# Checks: auditwheel (manylinux tags and the glibc symbol versions they allow), the musl
# wheel's ELF dependencies, abi3audit (only the stable ABI of 3.10), twine check,
# check-wheel-contents, both licence files in every distribution. Installing and running
# the wheels is .ci/wheel-smoke.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
export NO_COLOR=1 COLUMNS=200  # plain, unwrapped output from twine and abi3audit
step() { printf -- '--> %s\n' "$*"; }

for tool in maturin auditwheel abi3audit twine check-wheel-contents readelf; do
    command -v "$tool" >/dev/null || { echo "build-wheels: $tool not found (pip install --group wheels)" >&2; exit 1; }
done
python -c 'import ziglang' 2>/dev/null || { echo "build-wheels: ziglang not installed (pip install --group wheels)" >&2; exit 1; }

targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu x86_64-unknown-linux-musl)
installed=$(rustup target list --installed)
for target in "${targets[@]}"; do
    if ! grep -qx "$target" <<<"$installed"; then
        step "rustup target add $target"
        if ! rustup target add "$target"; then
            echo "build-wheels: cannot add the Rust target $target (rustup needs its dist" \
                "server, static.rust-lang.org); its wheel cannot be built on this machine" >&2
            exit 1
        fi
    fi
done

rm -rf "$out"
mkdir -p "$out"
build() {  # target compatibility [extra maturin flags]
    local target=$1 compat=$2
    shift 2
    step "wheel for $target ($compat)"
    maturin build --release --zig --target "$target" --compatibility "$compat" \
        --out "$out" --quiet "$@"
}
# --sdist writes the sdist and builds this wheel from it: proof that the sdist builds.
build x86_64-unknown-linux-gnu manylinux2014 --sdist
build aarch64-unknown-linux-gnu manylinux2014
build x86_64-unknown-linux-musl musllinux_1_2

step "pure-Python wheel"
python .ci/pure_wheel.py "$out"/ferrosmtp-*-manylinux*_x86_64.whl "$out"

step "platform tags (auditwheel, ELF dependencies) and licence files"
python .ci/check_dists.py "$out"

step "abi3audit, twine check, check-wheel-contents"
abi3audit --strict --summary "$out"/*abi3*.whl
twine --no-color check --strict "$out"/*
check-wheel-contents "$out"/*.whl

ls -l "$out"
