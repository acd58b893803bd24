"""The case-study table has every row, each measured, and the CLI prints it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from optim.__main__ import main
from optim.handle import ModelHandle
from optim.io.data import Dataset
from optim.measure.core import predict
from optim.sweep.casestudy import CaseStudyConfig, format_table, run_casestudy

ROWS = ["baseline", "pruning", "pruning + distillation", "smaller student", "quantization", "combined"]


@pytest.fixture(scope="module")
def study_data(tiny_cnn: ModelHandle) -> tuple[Dataset, Dataset]:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((500, 3, 16, 16)).astype(np.float32)
    y = predict(tiny_cnn, x).argmax(1).astype(np.int64)
    return Dataset(x=x[:200], y=y[:200], name="test"), Dataset(x=x[200:], y=y[200:], name="train")


@pytest.mark.slow
def test_run_casestudy_has_every_row_measured(tiny_cnn: ModelHandle, study_data) -> None:
    test, train = study_data
    df = run_casestudy(tiny_cnn, test, train, CaseStudyConfig(distill_epochs=1, latency_budget_s=0.05))
    assert df["technique"].tolist() == ROWS
    assert "error" not in df or df["error"].isna().all(), df.get("error")
    assert df.loc[0, "top1"] == pytest.approx(100.0)
    pruning = df[df["technique"] == "pruning"].iloc[0]
    assert pruning["params_%"] < -30 and pruning["macs_%"] < -30
    quant = df[df["technique"] == "quantization"].iloc[0]
    assert quant["memory_%"] < -10  # tiny model: QDQ scales and zero points weigh a lot
    assert (df["latency_ms"] > 0).all()
    text = format_table(df)
    for name in ROWS:
        assert name in text


def test_casestudy_cli_refuses_model_file_without_data(tmp_path, tiny_cnn: ModelHandle, capsys) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(tiny_cnn.model, path)
    assert main(["casestudy", str(path)]) == 2
    assert "--data" in capsys.readouterr().err
