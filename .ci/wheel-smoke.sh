#!/usr/bin/env bash
# Build the wheel users install, install it into a venv of its own (no source tree on the
# path), and check that it works end to end: the Rust core is the active backend, the
# typing files are inside, and `ferrosmtp serve` receives what `ferrosmtp send` sends.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

pip wheel -q --no-deps -w "$work/dist" .
wheel=$(ls "$work"/dist/ferrosmtp-*.whl)
echo "built $(basename "$wheel")"
case "$wheel" in *abi3*) ;; *) echo "not an abi3 wheel: $wheel" >&2; exit 1 ;; esac

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$wheel"
cd "$work"  # away from the source tree: only the installed package can be imported
"$work/venv/bin/python" - <<'PY'
import importlib.resources, ferrosmtp, ferrosmtp._core
from ferrosmtp import codec
assert codec.BACKEND == "rust", codec.BACKEND
files = importlib.resources.files("ferrosmtp")
assert (files / "py.typed").is_file() and (files / "_core.pyi").is_file()
print("installed", ferrosmtp.__version__, "from", ferrosmtp.__file__)
PY

port=$("$work/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$work/venv/bin/ferrosmtp" serve --port "$port" --maildir "$work/mail" -q &
server=$!
for _ in $(seq 50); do
    "$work/venv/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.1
done
printf 'From: a@example.org\r\nTo: b@example.org\r\nSubject: wheel smoke\r\n\r\nHello.\r\n' > "$work/msg.eml"
"$work/venv/bin/ferrosmtp" send "$work/msg.eml" --host 127.0.0.1 --port "$port" \
    --from a@example.org --to b@example.org
kill -TERM "$server"
wait "$server"
server=
count=$(ls "$work/mail/new" | wc -l)
grep -q "Subject: wheel smoke" "$work"/mail/new/*
echo "wheel smoke: $count message stored by the installed ferrosmtp serve"
test "$count" -eq 1
