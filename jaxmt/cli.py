"""What every jaxmt command line shares: flag parsing with one-line errors, and log levels.

Each command defines its absl flags in a function called only when it runs as `__main__`, so
importing several commands' modules in one process (tests, notebooks) never defines a flag twice.
"""

from __future__ import annotations

import logging
import sys

from absl import flags


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a misspelt or ill-typed --config.x override as a one-line error."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as err:
        message = str(err).replace("\\'", "'").replace("\\n", " ").replace("\n", " ").strip("'\" ")
        print(f"jaxmt: error: bad command-line flag: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def setup_logging() -> None:
    """jaxmt's own progress at INFO; libraries (Orbax, absl) only when they warn."""
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("jaxmt").setLevel(logging.INFO)
