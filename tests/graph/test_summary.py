from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optim.graph.summary import COLUMNS, summarize
from optim.handle import ModelHandle
from optim.io.load import load
from optim.reference.zoo import zoo_model

RNG = np.random.default_rng(0)


def _init(name: str, shape: tuple[int, ...], dtype=np.float32) -> onnx.TensorProto:
    if np.issubdtype(dtype, np.integer):
        return numpy_helper.from_array(RNG.integers(-5, 5, shape).astype(dtype), name)
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(dtype), name)


def _handle(nodes, inputs, outputs, inits, opset: int = 17) -> ModelHandle:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    return ModelHandle(model=model, name="hand")


def _vi(name: str, shape, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _row(summary, op_type: str) -> dict:
    rows = summary.layers[summary.layers.op_type == op_type]
    assert len(rows) == 1
    return rows.iloc[0].to_dict()


def test_summarize_counts_conv_macs_flops_and_params_by_hand():
    h = _handle([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 4, 8, 8])], [_init("w", (4, 3, 3, 3)), _init("b", (4,))])
    s = summarize(h)
    row = _row(s, "Conv")
    out_elems, k = 4 * 8 * 8, 3 * 3 * 3
    assert row["macs"] == out_elems * k
    assert row["flops"] == 2 * out_elems * k + out_elems
    assert row["params"] == 4 * 27 + 4 and row["weight_bytes"] == 4 * (4 * 27 + 4)
    assert row["act_in_elems"] == 3 * 64 and row["act_out_elems"] == out_elems
    assert row["out_shape"] == "[1, 4, 8, 8]" and row["weight_dtype"] == "float32"
    assert list(s.layers.columns) == COLUMNS
    assert (s.macs, s.params, s.opset, s.size_bytes) == (row["macs"], row["params"], 17, h.size_bytes)


def test_summarize_counts_depthwise_conv_through_group_weight_shape():
    h = _handle([helper.make_node("Conv", ["x", "w"], ["y"], group=8, strides=[2, 2], pads=[1, 1, 1, 1])],
                [_vi("x", [1, 8, 8, 8])], [_vi("y", [1, 8, 4, 4])], [_init("w", (8, 1, 3, 3))])
    row = _row(summarize(h), "Conv")
    assert row["macs"] == (8 * 4 * 4) * 9  # each output sees one input channel
    assert row["flops"] == 2 * row["macs"] and row["params"] == 72


def test_summarize_counts_gemm_with_transposed_weight_and_bias():
    h = _handle([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
                [_vi("x", [1, 16])], [_vi("y", [1, 10])], [_init("w", (10, 16)), _init("b", (10,))])
    row = _row(summarize(h), "Gemm")
    assert (row["macs"], row["flops"], row["params"]) == (160, 2 * 160 + 10, 170)


def test_summarize_treats_symbolic_batch_as_one_for_matmul():
    h = _handle([helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
                [_vi("x", ["N", 5, 16])], [_vi("z", ["N", 5, 32])], [_init("w", (16, 32))])
    s = summarize(h)
    assert _row(s, "MatMul")["macs"] == 5 * 32 * 16
    assert _row(s, "Relu")["flops"] == 5 * 32
    assert s.inputs == [("x", ("N", 5, 16), "float32")] and s.outputs == [("z", ("N", 5, 32), "float32")]
    assert s.op_histogram == {"MatMul": 1, "Relu": 1}


def test_summarize_counts_weights_behind_dequantize_linear_at_stored_dtype():
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
             helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    inits = [_init("wq", (4, 3, 3, 3), np.int8), numpy_helper.from_array(np.full(4, 0.1, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz")]
    s = summarize(_handle(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 4, 8, 8])], inits))
    conv, dq = _row(s, "Conv"), _row(s, "DequantizeLinear")
    assert conv["params"] == 108 and conv["weight_dtype"] == "int8"
    assert conv["weight_bytes"] == 108 * 1 + 4 * 4 + 4 * 1
    assert dq["params"] == 0 and s.params == 108


def test_summarize_counts_qlinearconv_macs_and_int8_weights():
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"]
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "xs"), numpy_helper.from_array(np.array(0, np.uint8), "xz"),
             _init("w", (4, 3, 3, 3), np.int8), numpy_helper.from_array(np.array(0.1, np.float32), "ws"),
             numpy_helper.from_array(np.array(0, np.int8), "wz"), numpy_helper.from_array(np.array(0.2, np.float32), "ys"),
             numpy_helper.from_array(np.array(0, np.uint8), "yz"), _init("b", (4,), np.int32)]
    h = _handle([helper.make_node("QLinearConv", names, ["y"], pads=[1, 1, 1, 1])],
                [_vi("x", [1, 3, 8, 8], TensorProto.UINT8)], [_vi("y", [1, 4, 8, 8], TensorProto.UINT8)], inits)
    row = _row(summarize(h), "QLinearConv")
    assert row["macs"] == 256 * 27 and row["flops"] == 2 * 256 * 27 + 256
    assert row["params"] == 108 + 4 and row["weight_dtype"] == "int8"
    assert row["weight_bytes"] == 108 + 4 * 4 + 3 * 4 + 3 * 1


def test_summarize_keeps_macs_and_params_when_dynamic_int8_quantized(tiny_mlp, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(tiny_mlp.model, src)
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    q = summarize(ModelHandle(model=onnx.load(dst), name="q"))
    f = summarize(tiny_mlp)
    assert "MatMulInteger" in q.op_histogram
    assert q.macs == f.macs and q.params == f.params
    fp_w = f.layers.weight_bytes.sum()
    assert q.layers[q.layers.op_type == "MatMulInteger"].weight_bytes.sum() < 0.3 * fp_w


def test_summarize_counts_matmulnbits_params_from_k_and_n():
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    h = _handle([helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", [1, 64])], [_vi("y", [1, 32])],
                [_init("w", (64, 32))], opset=21)
    quantizer = MatMulNBitsQuantizer(h.copy_model(), block_size=32, is_symmetric=True)
    quantizer.process()
    s = summarize(ModelHandle(model=quantizer.model.model, name="q4"))
    row = _row(s, "MatMulNBits")
    assert row["macs"] == 32 * 64 and row["params"] == 64 * 32
    assert row["weight_bytes"] < 64 * 32 and row["weight_dtype"] == "uint8"


def test_summarize_counts_lenet_opset9_by_hand():
    s = summarize(load(zoo_model("lenet_opset9").SerializeToString(), "lenet.onnx"))
    conv1, conv2 = 6 * 24 * 24 * (1 * 25), 16 * 8 * 8 * (6 * 25)
    assert s.macs == conv1 + conv2 + 256 * 120 + 120 * 84 + 84 * 10
    assert s.params == (6 * 25 + 6) + 4 * 6 + (16 * 150 + 16) + (256 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert s.op_histogram["BatchNormalization"] == 1 and s.opset == 9


@pytest.mark.parametrize(("name", "giga_macs", "mega_params"),
                         [("resnet18", 1.82, 11.7), ("mobilenet_v2", 0.30, 3.5),
                          pytest.param("resnet50", 4.1, 25.5, marks=pytest.mark.slow)])
def test_summarize_matches_published_macs_for_zoo_graphs(name: str, giga_macs: float, mega_params: float):
    s = summarize(load(zoo_model(name).SerializeToString(), f"{name}.onnx"))
    assert s.macs == pytest.approx(giga_macs * 1e9, rel=0.03)
    assert s.params == pytest.approx(mega_params * 1e6, rel=0.03)
    assert s.layers.macs.sum() == s.macs and (s.layers.macs >= 0).all()


@pytest.mark.slow
def test_summarize_matches_legacy_macs_when_dynamo_exported():
    dynamo = summarize(load(zoo_model("resnet18", exporter="dynamo").SerializeToString(), "r18.onnx"))
    legacy = summarize(load(zoo_model("resnet18").SerializeToString(), "r18.onnx"))
    assert dynamo.macs == legacy.macs and dynamo.params == legacy.params


def test_summarize_counts_conv_transpose_per_input_element():
    h = _handle([helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])],
                [_vi("x", [1, 4, 4, 4])], [_vi("y", [1, 2, 9, 9])], [_init("w", (4, 2, 3, 3))])
    row = _row(summarize(h), "ConvTranspose")
    assert row["macs"] == (4 * 4 * 4) * (2 * 3 * 3)  # every input element scatters into Cout × k × k
    assert row["params"] == 72 and row["out_shape"] == "[1, 2, 9, 9]"


def test_summarize_counts_pooling_and_batchnorm_flops():
    bn = [_init(n, (4,)) for n in ("s", "b", "m")] + [numpy_helper.from_array(np.ones(4, np.float32), "v")]
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"]),
             helper.make_node("MaxPool", ["y"], ["z"], kernel_shape=[2, 2], strides=[2, 2])]
    s = summarize(_handle(nodes, [_vi("x", [1, 4, 8, 8])], [_vi("z", [1, 4, 4, 4])], bn))
    assert _row(s, "BatchNormalization")["flops"] == 2 * 256 and _row(s, "BatchNormalization")["params"] == 16
    assert _row(s, "MaxPool")["flops"] == 64 * 4 and s.macs == 0


def test_summarize_counts_chained_matmulnbits_like_the_fp32_graph(tiny_mlp: ModelHandle) -> None:
    """ONNX shape inference does not know MatMulNBits; chained layers must still get their MACs."""
    from optim.passes import get_pass

    quant = get_pass("quantize")
    int4 = quant.run(tiny_mlp, quant.config_cls(mode="int4"))
    assert sum(n.op_type == "MatMulNBits" for n in int4.model.graph.node) >= 2
    assert summarize(int4).macs == summarize(tiny_mlp).macs
