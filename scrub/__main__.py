"""``python -m scrub``: the ``scrub`` command (see `scrub.cli`)."""

import sys

from scrub.cli import main

if __name__ == "__main__":
    sys.exit(main())
