"""`pyright --verifytypes ferrosmtp`: the share of the public API whose types a user's
type checker knows, and the public functions and classes without a docstring. Fails below
the floor or for any missing docstring; prints the score and what is missing.

    python .ci/verifytypes.py [--floor 98]

Two scores: ferrosmtp's own names (``--ignoreexternal``: a type from pytest that pyright
cannot fully know does not count against us), and all of them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def score(ignore_external: bool) -> tuple[float, list[str], list[str]]:
    command = ["pyright", "--pythonpath", sys.executable, "--verifytypes", "ferrosmtp"]
    if ignore_external:
        command.append("--ignoreexternal")
    out = subprocess.run([*command, "--outputjson"], capture_output=True, text=True)
    report = json.loads(out.stdout)["typeCompleteness"]
    missing = [
        symbol["name"]
        for symbol in report["symbols"]
        if symbol["isExported"] and (symbol["isTypeAmbiguous"] or not symbol["isTypeKnown"])
    ]
    undocumented = [
        symbol["name"]
        for symbol in report["symbols"]
        if symbol["isExported"]
        and any("No docstring" in d["message"] for d in symbol["diagnostics"])
    ]
    return report["completenessScore"] * 100, missing, undocumented


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--floor", type=float, default=98.0)
    floor = parser.parse_args().floor
    own, missing, undocumented = score(ignore_external=True)
    total, _, _ = score(ignore_external=False)
    print(
        f"pyright --verifytypes ferrosmtp: {own:.1f}% (--ignoreexternal), {total:.1f}% (all); "
        f"{len(undocumented)} public functions or classes without a docstring"
    )
    for name in missing:
        print(f"  not fully typed: {name}")
    for name in undocumented:
        print(f"  no docstring: {name}")
    if own < floor:
        raise SystemExit(f"verifytypes: {own:.1f}% is below the floor of {floor}%")
    if undocumented:
        raise SystemExit("verifytypes: every public function and class needs a docstring")


if __name__ == "__main__":
    main()
