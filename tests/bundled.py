"""The bundled samples (committed under sample_models/): a test that needs one fails, never skips, when it is
missing or does not load — that is a defect of this checkout, not a reason to test less."""

from __future__ import annotations

import pytest

from optim.io.samples import list_samples, load_sample


def sample(name: str):
    """``(handle, test, train)`` of a bundled sample, or a test failure that says how to rebuild it."""
    try:
        return load_sample(name)
    except Exception as exc:  # noqa: BLE001 - any failure here is reported as this test's failure
        pytest.fail(f"bundled sample {name} does not load ({exc}); rebuild with `make samples`")


def sample_names() -> list[str]:
    """Names of every bundled sample; a failure when there are none."""
    names = [s.name for s in list_samples()]
    if not names:
        pytest.fail("no bundled samples in sample_models/; rebuild with `make samples`")
    return names
