"""Print the requirements of the installed ferrosmtp (without extras), one a line, for
``pip install -r``: the wheel under test comes from dist/ with --no-deps, its
dependencies from the index."""

from importlib import metadata

for requirement in metadata.requires("ferrosmtp") or []:
    if "extra ==" not in requirement:
        print(requirement)
