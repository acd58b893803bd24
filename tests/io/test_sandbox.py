"""The bubblewrap sandbox for TorchScript/.pt2: honey files outside stay unread, markers unwritten."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import numpy_helper

from optim.errors import MalformedModelError, SandboxUnavailableError
from optim.io import sandbox
from optim.io.load import load

HONEY = b"HONEY-7f3a9c-do-not-leak"
needs_bwrap = pytest.mark.skipif(sandbox.bwrap_path() is None and not os.environ.get("OPTIM_REQUIRE_SANDBOX"),
                                 reason="bubblewrap not installed (.ci/run installs it and requires it)")


class _ReadsAtLoad(torch.nn.Module):
    """__setstate__ (run by torch.jit.load) copies a host file's bytes into a buffer the export keeps."""

    def __init__(self, path: str, n: int) -> None:
        super().__init__()
        self.path = path
        self.n = n
        self.data = torch.zeros(n, dtype=torch.uint8)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, int, bool]:
        return (self.path, self.n, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, int, bool]) -> None:
        self.path = state[0]
        self.n = state[1]
        self.data = torch.from_file(self.path, False, self.n, dtype=torch.uint8)
        self.training = state[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.data.to(torch.float32)


class _WritesInForward(torch.nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, self.path)
        return x * 2


def _script_bytes(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


@pytest.fixture()
def honey(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "honey.bin"
    path.parent.mkdir()
    path.write_bytes(HONEY)
    return path


def _weights_bytes(handle: object) -> bytes:
    """Every initializer's values as bytes (floats holding byte values are cast back to bytes)."""
    arrays = [numpy_helper.to_array(t) for t in handle.model.graph.initializer]  # type: ignore[attr-defined]
    return b"".join(a.tobytes() + a.astype(np.uint8).tobytes() for a in arrays)


def test_argv_binds_no_tmp_home_repo_or_root() -> None:
    argv = sandbox.bwrap_argv("/usr/bin/bwrap")
    binds = [argv[i + 2] for i, a in enumerate(argv) if a in ("--ro-bind", "--bind")]
    assert "--unshare-all" in argv and "--clearenv" in argv and "--bind" not in argv
    repo = Path(__file__).resolve().parents[2]
    roots = sandbox.python_roots()  # the interpreter and its packages, wherever they live (a CI .venv in the clone)
    for dest in binds:
        assert dest != "/", dest
        if any(Path(dest).is_relative_to(r) for r in roots) or dest.startswith("/usr/lib"):
            continue
        assert not dest.startswith(("/tmp", "/home", "/etc", "/var")), dest
        if not dest.startswith("/sandbox/pkg/"):
            assert not Path(dest).is_relative_to(repo), dest
    # only the converter's own four files of the project go in
    assert len([b for b in binds if b.startswith("/sandbox/pkg/")]) == 4


@pytest.mark.slow
def test_control_unsandboxed_conversion_does_read_the_honey_file(honey: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The payload works when nothing stops it (so the sandboxed test below is not vacuous)."""
    monkeypatch.setenv("OPTIM_SANDBOX", "off")
    monkeypatch.setenv("OPTIM_ALLOW_UNSANDBOXED_TORCH", "1")
    data = _script_bytes(_ReadsAtLoad(str(honey), len(HONEY)))
    with pytest.warns(UserWarning, match="without a sandbox"):
        handle = load(data, "net.pt", input_shapes={"x": (1, len(HONEY))})
    assert HONEY in _weights_bytes(handle)


@needs_bwrap
@pytest.mark.slow
def test_sandboxed_torchscript_cannot_read_a_file_outside(honey: Path) -> None:
    data = _script_bytes(_ReadsAtLoad(str(honey), len(HONEY)))
    with pytest.raises(MalformedModelError) as info:
        load(data, "net.pt", input_shapes={"x": (1, len(HONEY))})
    assert HONEY.decode() not in str(info.value)
    assert "TorchScript could not load" in str(info.value)


@needs_bwrap
@pytest.mark.slow
def test_sandboxed_torchscript_cannot_write_a_marker_outside(tmp_path: Path) -> None:
    marker = tmp_path / "marker.pt"
    try:
        load(_script_bytes(_WritesInForward(str(marker))), "net.pt", input_shapes={"x": (1, 4)})
    except MalformedModelError:
        pass  # refusing is fine too; what matters is the host file system
    assert not marker.exists()


def test_torch_upload_is_refused_with_advice_when_no_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIM_SANDBOX", "off")
    monkeypatch.delenv("OPTIM_ALLOW_UNSANDBOXED_TORCH", raising=False)
    data = _script_bytes(_WritesInForward("unused"))
    with pytest.raises(SandboxUnavailableError, match="bubblewrap") as info:
        load(data, "net.pt", input_shapes={"x": (1, 4)})
    assert "torch.onnx.export" in str(info.value)
