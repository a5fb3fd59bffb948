"""Make the py3-none-any wheel of the pure-Python fallback from a built binary wheel.

    python .ci/pure_wheel.py dist/ferrosmtp-X-cp310-abi3-manylinux....whl dist/

The pure wheel holds what the binary wheel holds (the Python package, ``_core.pyi`` and
``py.typed``, the metadata with its licence files and entry points) minus the compiled
extension and the SBOM of its Rust crates. Starting from the binary wheel keeps the two
identical in everything else: one ``METADATA``, written by maturin from ``pyproject.toml``.
pip prefers the binary wheel wherever one matches (a ``cp310-abi3-<platform>`` tag ranks
above ``py3-none-any``); the pure one serves every other platform and PyPy, where
``ferrosmtp.codec`` falls back to the twin by itself.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import zipfile
from pathlib import Path

EXTENSION = re.compile(r"^ferrosmtp/_core\.[^/]*(\.so|\.pyd)$")


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def make_pure(binary: Path, out_dir: Path) -> Path:
    name, version, *_ = binary.name.split("-")
    dist_info = f"{name}-{version}.dist-info"
    target = out_dir / f"{name}-{version}-py3-none-any.whl"
    records: list[str] = []
    with zipfile.ZipFile(binary) as src, zipfile.ZipFile(target, "w") as dst:
        names = src.namelist()
        if not any(EXTENSION.match(n) for n in names):
            raise SystemExit(f"{binary}: no compiled extension inside; is it a binary wheel?")
        for info in src.infolist():
            member = info.filename
            if EXTENSION.match(member) or member.startswith(f"{dist_info}/sboms/"):
                continue
            if member == f"{dist_info}/RECORD":
                continue
            data = src.read(member)
            if member == f"{dist_info}/WHEEL":
                generator = re.search(rb"^Generator: (.*)$", data, re.M)
                data = (
                    b"Wheel-Version: 1.0\n"
                    b"Generator: "
                    + (generator.group(1) if generator else b"ferrosmtp")
                    + b" (+ .ci/pure_wheel.py)\n"
                    b"Root-Is-Purelib: true\n"
                    b"Tag: py3-none-any\n"
                )
            out = zipfile.ZipInfo(member, date_time=info.date_time)
            out.external_attr = info.external_attr
            out.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(out, data)
            records.append(f"{member},{_record_hash(data)},{len(data)}")
        records.append(f"{dist_info}/RECORD,,")
        record = zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=(1980, 1, 1, 0, 0, 0))
        record.compress_type = zipfile.ZIP_DEFLATED
        dst.writestr(record, "\n".join(records) + "\n")
    return target


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(make_pure(Path(sys.argv[1]), Path(sys.argv[2])))
