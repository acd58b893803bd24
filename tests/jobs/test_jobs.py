"""The job layer: plain-data specs, worker processes with limits, errors that say which limit was hit."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest

from optim.errors import (
    ConfigError,
    JobCrashedError,
    JobMemoryError,
    JobTimeoutError,
    MalformedModelError,
    OptimError,
)
from optim.jobs import InlineExecutor, JobSpec, Limits, LocalProcessExecutor, default_limits
from optim.jobs.spec import FrameError, JobResult, encode_frame, error_class, read_frame


@pytest.fixture(scope="module")
def executor() -> LocalProcessExecutor:
    ex = LocalProcessExecutor(max_workers=2)
    yield ex
    ex.shutdown()


def test_frames_round_trip_header_and_blobs() -> None:
    frame = encode_frame({"type": "job", "args": {"a": [1, 2]}}, {"x": b"\x00\x01", "y": b""})
    header, blobs = read_frame(io.BytesIO(frame))
    assert header == {"type": "job", "args": {"a": [1, 2]}} and blobs == {"x": b"\x00\x01", "y": b""}


def test_read_frame_raises_frame_error_on_a_cut_frame() -> None:
    with pytest.raises(FrameError):
        read_frame(io.BytesIO(encode_frame({"a": 1}, {"b": b"123456"})[:-3]))


def test_error_class_finds_subclasses_defined_outside_errors_module() -> None:
    from optim.io.load import EmptyFileError

    assert error_class("EmptyFileError") is EmptyFileError
    assert error_class("NoSuchError") is OptimError


def test_result_unwrap_raises_the_jobs_error_type() -> None:
    with pytest.raises(MalformedModelError, match="bad"):
        JobResult(ok=False, error_type="MalformedModelError", error_message="bad").unwrap()


def test_default_limits_bound_memory_and_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIM_JOB_MEMORY_MB", "3000")
    lim = default_limits("load_model")
    assert lim.address_space_bytes == 3000 * 2**20 and lim.wall_s == 60 and lim.cpu_s >= 60
    monkeypatch.setenv("OPTIM_JOB_LIMITS", "off")
    assert default_limits("load_model") == Limits(None, None, None)


def test_worker_returns_value_and_blobs_and_is_reused(executor: LocalProcessExecutor) -> None:
    a = executor.run(JobSpec("probe", {"mode": "echo", "n": 3}, {"b": b"abc"})).unwrap()
    b = executor.run(JobSpec("probe", {"mode": "echo"})).unwrap()
    assert a.value["args"] == {"mode": "echo", "n": 3} and a.blobs == {"b": b"cba"}
    assert a.value["pid"] == b.value["pid"] != os.getpid()


def test_worker_runs_in_a_private_scratch_dir_emptied_between_jobs(executor: LocalProcessExecutor) -> None:
    first = executor.run(JobSpec("probe", {"mode": "cwd"})).unwrap().value
    second = executor.run(JobSpec("probe", {"mode": "cwd"})).unwrap().value
    assert first["cwd"] != os.getcwd() and Path(first["cwd"]).name.startswith("job-")
    assert second["listing"] == ["left-behind.txt"]  # only this job's own file: the last one's was removed


def test_job_past_its_wall_time_is_killed_with_a_message(executor: LocalProcessExecutor) -> None:
    t0 = time.monotonic()
    with pytest.raises(JobTimeoutError, match="1 s wall-time limit") as info:
        executor.run(JobSpec("probe", {"mode": "sleep"}, limits=Limits(None, None, 1.0), label="loading x"))
    assert time.monotonic() - t0 < 15
    assert "loading x" in str(info.value) and "--no-limits" in str(info.value)


def test_job_past_its_memory_limit_becomes_job_memory_error(executor: LocalProcessExecutor) -> None:
    with pytest.raises(JobMemoryError, match="2.0 GiB memory limit"):
        executor.run(JobSpec("probe", {"mode": "alloc", "bytes": 3 * 2**30}, limits=Limits(2**31, None, 60))).unwrap()
    # the worker survives a MemoryError and still answers
    assert executor.run(JobSpec("probe", {"mode": "echo"})).unwrap().ok


@pytest.mark.slow
def test_job_past_its_cpu_time_is_killed(executor: LocalProcessExecutor) -> None:
    with pytest.raises(JobTimeoutError, match="CPU-time limit"):
        executor.run(JobSpec("probe", {"mode": "spin"}, limits=Limits(None, 1, 120)))


def test_crashed_worker_becomes_job_crashed_error_and_is_replaced(executor: LocalProcessExecutor) -> None:
    with pytest.raises(JobCrashedError, match="signal 11"):
        executor.run(JobSpec("probe", {"mode": "crash"}))
    assert executor.run(JobSpec("probe", {"mode": "echo"})).unwrap().ok


def test_progress_arrives_and_cancel_reaches_the_job(executor: LocalProcessExecutor) -> None:
    seen: list[dict] = []
    out = executor.run(JobSpec("probe", {"mode": "progress", "steps": 4, "step_s": 0.01}), progress=seen.append)
    assert [p["done"] for p in seen] == [1, 2, 3, 4] and out.unwrap().value == {"cancelled_at": None}
    flag = threading.Event()
    res = executor.run(JobSpec("probe", {"mode": "progress", "steps": 500, "step_s": 0.05}),
                       progress=lambda p: flag.set() if p["done"] >= 2 else None, cancel=flag.is_set)
    assert res.unwrap().value["cancelled_at"] is not None and res.value["cancelled_at"] < 500


def test_unknown_kind_is_a_config_error_and_inline_runs_the_same_tasks() -> None:
    with pytest.raises(ConfigError, match="Unknown job kind"):
        InlineExecutor().run(JobSpec("nope")).unwrap()
    assert InlineExecutor().run(JobSpec("probe", {"mode": "echo"})).unwrap().value["pid"] == os.getpid()


def test_model_that_fails_in_onnx_runtime_becomes_a_message_not_a_bug_report() -> None:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from optim.handle import ModelHandle
    from optim.jobs import codec

    g = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array([3], np.int64), "s")])
    handle = ModelHandle(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), "bad")
    spec = JobSpec("baseline", {"model": codec.handle_facts(handle), "budget_s": 0.01}, codec.handle_blobs(handle))
    with pytest.raises(MalformedModelError, match="ONNX Runtime could not run this model") as info:
        InlineExecutor().run(spec).unwrap()
    assert "bug" not in str(info.value)
