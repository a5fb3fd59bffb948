"""Check the distributions .ci/build-wheels.sh wrote: platform tags, ELF dependencies and
licence files. Prints one line per distribution; exits non-zero on the first problem.

    python .ci/check_dists.py dist/
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

LICENCES = {"LICENSE-MIT", "LICENSE-APACHE"}


def fail(message: str) -> None:
    raise SystemExit(f"check-dists: {message}")


def check_manylinux(wheel: Path, arch: str) -> None:
    """auditwheel: the tag the ELF allows, no library outside the manylinux set."""
    out = subprocess.run(
        ["auditwheel", "show", "--json", str(wheel)], check=True, capture_output=True, text=True
    )
    report = json.loads(out.stdout)
    want = f"manylinux_2_17_{arch}"
    versions = sorted({v for vs in report["versioned_symbols"].values() for v in vs})
    libs = report["external_libs"]
    print(
        f"  {wheel.name}: auditwheel: {report['overall_tag']}; external libraries: "
        f"{libs or 'none'}; symbol versions: {', '.join(versions)}"
    )
    if report["overall_tag"] != want or libs:
        fail(f"{wheel.name} is not {want} (auditwheel says {report['overall_tag']}, {libs})")


def check_musllinux(wheel: Path) -> None:
    """auditwheel judges a musllinux wheel only on a musl host; read the ELF here. zig links
    the C library as "libc.so", a name musl's loader resolves to itself."""
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(wheel).extractall(tmp)
        (extension,) = Path(tmp, "ferrosmtp").glob("_core*.so")
        dynamic = subprocess.run(
            ["readelf", "-d", "-l", str(extension)], check=True, capture_output=True, text=True
        ).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", dynamic)
    print(f"  {wheel.name}: ELF needs {', '.join(needed) or 'nothing'}")
    if needed != ["libc.so"] or "program interpreter" in dynamic:
        fail(f"{wheel.name}: the extension needs more than musl's libc: {needed}")


def check_licences(dist: Path) -> None:
    if dist.suffix == ".whl":
        members = [n for n in zipfile.ZipFile(dist).namelist() if ".dist-info/licenses/" in n]
    else:
        members = [n for n in tarfile.open(dist).getnames() if n.count("/") == 1]
    found = {m.rsplit("/", 1)[-1] for m in members}
    if not LICENCES <= found:
        fail(f"{dist.name} lacks {sorted(LICENCES - found)}")


def main(out: Path) -> None:
    dists = sorted(out.glob("ferrosmtp-*"))
    kinds = {
        "sdist": [d for d in dists if d.name.endswith(".tar.gz")],
        "x86_64": [d for d in dists if d.name.endswith("manylinux_2_17_x86_64.whl")],
        "aarch64": [d for d in dists if d.name.endswith("manylinux_2_17_aarch64.whl")],
        "musl": [d for d in dists if d.name.endswith("musllinux_1_2_x86_64.whl")],
        "pure": [d for d in dists if d.name.endswith("-py3-none-any.whl")],
    }
    for kind, found in kinds.items():
        if len(found) != 1:
            fail(f"expected one {kind} distribution in {out}, found {[d.name for d in found]}")
    check_manylinux(kinds["x86_64"][0], "x86_64")
    check_manylinux(kinds["aarch64"][0], "aarch64")
    check_musllinux(kinds["musl"][0])
    for dist in dists:
        check_licences(dist)
    print(f"  licence files {', '.join(sorted(LICENCES))} in all {len(dists)} distributions")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
