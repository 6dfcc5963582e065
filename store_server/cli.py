"""What the command-line tools of the store server (and analytics, bench) share."""

from __future__ import annotations

import argparse
from typing import NoReturn

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line on stderr, exit 2, not the usage block:
    operators and scripts read that line (--help still prints the usage)."""

    def error(self, message: str) -> NoReturn:
        """Print `prog: error: message` and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")
