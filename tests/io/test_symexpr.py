"""The .pt2 shape-expression grammar: what torch writes passes; code, powers and oddities are refused."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

from optim.io.load import load
from optim.io.symexpr import ExpressionRefused, UnsafeExpressionError, check_expression

ACCEPTED = [
    "s0", "s77 + 1", "2*s0 - 3", "(s0 - 1)//2 + 1", "Mod(s0, 4)", "Max(1, s0)", "Min(s0, 64) * 3", "-s0 + 4",
    "Symbol('s53', positive=True, integer=True)",
    "Add(FloorDiv(Add(Symbol('s53', positive=True, integer=True), Integer(-3)), Integer(2)), Integer(1))",
    "Mul(Integer(28), Max(Integer(1), Symbol('s1', integer=True)))",
]
REFUSED = [
    "__import__('os').system('id')", "s0.__class__", "s0**999999999", "Pow(s0, 2)", "exec('1')", "s0 / 2",
    "Symbol('s0', commutative=eval('1'))", "Symbol(s0)", "lambda: 0", "s0; s1", "s0 if s1 else s2",
    "Max(s0)(1)", "Integer(1)(2)", "1" * 40, "(" * 60 + "s0" + ")" * 60, "s0 + " * 600 + "1", "", "s0 @ s1",
    "Symbol('s0', integer=True, positive=__import__('os'))", "getattr(s0, 'x')", "s0[0]", "'s0'",
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_check_expression_accepts_what_torch_export_writes(text: str) -> None:
    check_expression(text)


@pytest.mark.parametrize("text", REFUSED)
def test_check_expression_refuses_code_and_unbounded_forms(text: str) -> None:
    with pytest.raises(ExpressionRefused):
        check_expression(text)


class _Conv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x).mean((2, 3))


@pytest.fixture(scope="module")
def pt2_bytes() -> bytes:
    ep = torch.export.export(_Conv().eval(), (torch.randn(2, 3, 8, 8),),
                             dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}})
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


def _with_expression(data: bytes, payload: str) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename.endswith("models/model.json"):
                doc = json.loads(raw)
                text = json.dumps(doc)
                assert '"expr_str"' in text  # the dynamic batch is written as an expression
                raw = text.replace('"expr_str": "', '"expr_str": ' + json.dumps(payload)[:-1] + '", "x": "', 1).encode()
            dst.writestr(info, raw)
    return out.getvalue()


def test_pt2_with_code_in_a_shape_expression_is_refused_before_torch(pt2_bytes: bytes, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = _with_expression(pt2_bytes, f"__import__('os').system('touch {marker}')")
    with pytest.raises(UnsafeExpressionError, match="symbolic shape expression") as info:
        load(data, "net.onnx")  # also when named .onnx: the bytes decide
    assert not marker.exists()
    assert len(str(info.value)) < 600
