#!/usr/bin/env bash
# Install a wheel that .ci/build-wheels.sh built into a fresh venv of PYTHON and run the
# smoke test (.ci/wheel_smoke.py) there, away from the source tree.
#
#   .ci/wheel-smoke.sh PYTHON rust DIST   pip chooses among DIST's wheels for PYTHON, and
#                                         must choose the binary (abi3 manylinux) one
#   .ci/wheel-smoke.sh PYTHON pure DIST   the py3-none-any wheel of the pure fallback
set -euo pipefail
python=$1 backend=$2 dist=$(cd "$3" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --disable-pip-version-check -q)
# ferrosmtp from DIST only (never from an index), then its dependencies from the index.
if [ "$backend" = rust ]; then
    "${pip[@]}" install --no-index --no-deps --find-links "$dist" ferrosmtp
else
    "${pip[@]}" install --no-deps "$dist"/ferrosmtp-*-py3-none-any.whl
fi
"$work/venv/bin/python" "$here/wheel_deps.py" | "$work/venv/bin/python" -m pip \
    --disable-pip-version-check -q install -r /dev/stdin
tag=$("$work/venv/bin/python" -c '
import importlib.metadata as m
print(" ".join(l.split(": ")[1] for l in m.distribution("ferrosmtp").read_text("WHEEL").splitlines() if l.startswith("Tag: ")))')
echo "$("$work/venv/bin/python" -V): installed the $tag wheel"
case "$backend:$tag" in
    rust:cp310-abi3-manylinux*_x86_64*|pure:py3-none-any) ;;
    *) echo "wheel-smoke: pip chose the $tag wheel for the $backend backend" >&2; exit 1 ;;
esac
cd "$work"  # away from the source tree: only the installed package can be imported
"$work/venv/bin/python" "$here/wheel_smoke.py" "$backend"
