"""``python -m ferrosmtp``: the same as the ``ferrosmtp`` command."""

import sys

from ferrosmtp.cli import main

sys.exit(main())
