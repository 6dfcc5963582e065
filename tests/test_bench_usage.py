"""Every bench script answers a usage error as the project's other commands do: one line on
stderr and exit 2 (before, argparse's usage block), run as `make bench` runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPTS = sorted(p.name for p in (REPO / "bench").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bad_option_is_one_line_and_exit_2(script, tmp_path):
    # From elsewhere and without PYTHONPATH: each script finds the repository by itself.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--bogus"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 2
    assert res.stderr.splitlines() == [f"{script}: error: unrecognized arguments: --bogus"]
