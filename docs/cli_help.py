"""Write docs/cli.md, the command-line reference, from the commands' own ``--help``.

    python docs/cli_help.py            # writes docs/cli.md
    python docs/cli_help.py --check    # fails if docs/cli.md is not what --help prints

The text is argparse's, at 90 columns; a test runs the check so the page cannot drift.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "cli.md"
COMMANDS = [
    ["serve"],
    ["send"],
    ["relay"],
    ["queue"],
    ["queue", "list"],
    ["queue", "show"],
    ["queue", "retry"],
    ["queue", "delete"],
    ["passwd"],
]
INTRO = """\
# Command line

`ferrosmtp` (or `python -m ferrosmtp`) and its subcommands, as their `--help` prints them.
A bad argument is one line naming the option, the file or the environment variable, and
exit status 2. `ferrosmtp --version` names the version, the codec backend and Python.
"""


def help_text(args: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERROSMTP_")}
    env["COLUMNS"] = "90"
    out = subprocess.run(
        [sys.executable, "-m", "ferrosmtp", *args, "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return out.stdout.rstrip() + "\n"


def render() -> str:
    parts = [INTRO]
    for command in COMMANDS:
        name = " ".join(["ferrosmtp", *command])
        parts.append(f"\n## `{name}`\n\n```text\n{help_text(command)}```\n")
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    page = render()
    if parser.parse_args().check:
        if not PAGE.exists() or PAGE.read_text() != page:
            sys.exit("docs/cli.md is stale: run python docs/cli_help.py")
    else:
        PAGE.write_text(page)
        print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
