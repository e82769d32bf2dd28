import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
UPDATE = os.environ.get("KDSL_UPDATE_GOLDEN") == "1"


def golden(path: Path, actual: str) -> None:
    """Compare with a golden file; KDSL_UPDATE_GOLDEN=1 rewrites it instead."""
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"missing golden file {path.name}; run with KDSL_UPDATE_GOLDEN=1 to create it")
        path.write_text(actual, encoding="utf-8")
        return
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{path.name} differs; KDSL_UPDATE_GOLDEN=1 rewrites it after review"

# Spec fixtures are inputs of the golden tests (some are wrong on purpose), not example suites
# for the kdsl pytest plugin.
collect_ignore_glob = ["fixtures/*"]
