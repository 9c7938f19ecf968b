"""The seed-port examples (examples/) run from a checkout and print what they promise."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {
    "cvm_api.py": "CVM API",
    "lite_network.py": "async output identical: True",
    "accl_async.py": "identical to sequential runs: True",
    "acl_model.py": "labels [[7], [6], [3], [7], [7], [3], [2], [8]]",
    "neuropod_addition.py": "[ 6  8 10 12]",
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs(name):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert EXAMPLES[name] in r.stdout
