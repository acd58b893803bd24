from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optim.analysis.pareto import pareto_front, pareto_mask
from optim.errors import ConfigError

OBJ3 = {"top1": "max", "latency_ms": "min", "effective_size_bytes": "min"}


def _naive_mask(df: pd.DataFrame, objectives: dict[str, str]) -> np.ndarray:
    """O(n²) reference: a row is kept unless some other ok row is >= everywhere and > somewhere."""
    rows = df.to_dict("records")

    def better_eq(a: dict, b: dict, col: str) -> bool:
        return a[col] >= b[col] if objectives[col] == "max" else a[col] <= b[col]

    def strictly(a: dict, b: dict, col: str) -> bool:
        return a[col] > b[col] if objectives[col] == "max" else a[col] < b[col]

    keep = []
    for b in rows:
        if b.get("status", "ok") != "ok":
            keep.append(False)
            continue
        dominated = False
        for a in rows:
            if a.get("status", "ok") != "ok":
                continue
            if all(better_eq(a, b, c) for c in objectives) and any(strictly(a, b, c) for c in objectives):
                dominated = True
                break
        keep.append(not dominated)
    return np.array(keep)


def _random_df(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # Small integer grids produce many ties and exact duplicates on purpose.
    df = pd.DataFrame(
        {
            "top1": rng.integers(0, 6, n) / 5,
            "latency_ms": rng.integers(1, 8, n).astype(float),
            "effective_size_bytes": rng.integers(1, 5, n) * 1000,
            "status": rng.choice(["ok", "ok", "ok", "failed"], n),
        }
    )
    dup = df.sample(n // 5, random_state=seed)
    return pd.concat([df, dup], ignore_index=True)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(
    "objectives",
    [OBJ3, {"top1": "max", "latency_ms": "min"}, {"effective_size_bytes": "min"}, {"latency_ms": "max", "top1": "min"}],
)
def test_pareto_mask_matches_naive_reference_on_random_sets(seed: int, objectives: dict[str, str]) -> None:
    df = _random_df(seed, n=40 + 7 * seed)
    got = pareto_mask(df, objectives).to_numpy()
    assert np.array_equal(got, _naive_mask(df, objectives))


def test_pareto_mask_matches_naive_reference_when_larger_than_one_chunk() -> None:
    rng = np.random.default_rng(99)
    df = pd.DataFrame({"top1": rng.random(1300), "latency_ms": rng.random(1300), "effective_size_bytes": rng.random(1300)})
    assert np.array_equal(pareto_mask(df, OBJ3).to_numpy(), _naive_mask(df, OBJ3))


def test_pareto_mask_keeps_all_duplicates_on_front() -> None:
    df = pd.DataFrame({"top1": [0.9, 0.9, 0.5], "latency_ms": [1.0, 1.0, 2.0], "effective_size_bytes": [10, 10, 20]})
    assert pareto_mask(df).tolist() == [True, True, False]


def test_pareto_mask_excludes_failed_and_missing_rows() -> None:
    df = pd.DataFrame(
        {
            "top1": [0.99, 0.5, np.nan],
            "latency_ms": [0.1, 1.0, 0.01],
            "effective_size_bytes": [1, 10, 1],
            "status": ["failed", "ok", "ok"],
        },
        index=[10, 11, 12],
    )
    mask = pareto_mask(df)
    assert mask.index.tolist() == [10, 11, 12]
    assert mask.tolist() == [False, True, False]


def test_pareto_mask_raises_config_error_when_column_unknown() -> None:
    with pytest.raises(ConfigError, match="nope"):
        pareto_mask(pd.DataFrame({"top1": [1.0]}), {"nope": "min"})


def test_pareto_mask_returns_empty_when_frame_empty() -> None:
    assert pareto_mask(pd.DataFrame(columns=list(OBJ3))).empty


def test_pareto_front_sorted_by_first_objective() -> None:
    df = pd.DataFrame({"top1": [0.5, 0.9, 0.7], "latency_ms": [1.0, 3.0, 2.0], "effective_size_bytes": [1, 1, 1]})
    assert pareto_front(df)["top1"].tolist() == [0.9, 0.7, 0.5]
