from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from optim.errors import (
    DataFormatError,
    FileTooLargeError,
    MissingInputError,
    OptimError,
    ShapeMismatchError,
    UnsafeArchiveError,
)
from optim.handle import ModelHandle
from optim.io.data import Dataset, load_data
from optim.io.model_data import check_compatible


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _png(color: tuple[int, int, int] | int, size: tuple[int, int] = (10, 12), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ---------------------------------------------------------------- Dataset ------------------------
def test_dataset_content_hash_changes_when_labels_change():
    x = np.zeros((4, 3), np.float32)
    a = Dataset(x=x, y=np.array([0, 1, 2, 3]), name="a")
    b = Dataset(x=x.copy(), y=np.array([0, 1, 2, 3]), name="b")
    c = Dataset(x=x, y=np.array([0, 1, 2, 0]), name="a")
    assert a.content_hash == b.content_hash
    assert a.content_hash != c.content_hash
    assert a.content_hash != Dataset(x=x, y=None, name="a").content_hash


def test_dataset_subset_is_seeded_and_keeps_pairs():
    x = np.arange(100, dtype=np.float32)[:, None]
    ds = Dataset(x=x, y=np.arange(100), name="d")
    s1, s2, s3 = ds.subset(10, seed=1), ds.subset(10, seed=1), ds.subset(10, seed=2)
    assert len(s1) == 10
    assert np.array_equal(s1.x, s2.x)
    assert not np.array_equal(s1.x, s3.x)
    assert np.array_equal(s1.x[:, 0].astype(np.int64), s1.y)
    assert ds.subset(500) is ds


def test_dataset_is_frozen():
    ds = Dataset(x=np.zeros((2, 2), np.float32), y=None, name="d")
    with pytest.raises(AttributeError):
        ds.name = "other"  # type: ignore[misc]


def test_dataset_raises_when_label_count_differs():
    with pytest.raises(DataFormatError, match="2 inputs but 3 labels"):
        Dataset(x=np.zeros((2, 2), np.float32), y=np.zeros(3, np.int64), name="d")


# ---------------------------------------------------------------- npz ----------------------------
def test_load_data_reads_npz_with_labels():
    x = np.random.default_rng(0).standard_normal((5, 3, 4, 4))
    ds = load_data(_npz(x=x, y=np.array([0, 1, 2, 1, 0])), "d.npz")
    assert ds.x.dtype == np.float32 and ds.x.shape == (5, 3, 4, 4)
    assert ds.y.dtype == np.int64 and ds.y.tolist() == [0, 1, 2, 1, 0]
    np.testing.assert_allclose(ds.x, x.astype(np.float32))


def test_load_data_reads_npz_without_labels(tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(_npz(x=np.ones((3, 7), np.float32)))
    ds = load_data(path, path.name)
    assert ds.y is None and ds.x.shape == (3, 7) and ds.name == "d.npz"


def test_load_data_raises_when_npz_has_object_array():
    data = _npz(x=np.array([np.zeros(2), "a"], dtype=object))
    with pytest.raises(DataFormatError, match="object arrays"):
        load_data(data, "d.npz")


def test_load_data_raises_when_npz_has_neither_x_nor_input_arrays():
    with pytest.raises(DataFormatError, match="named 'x'"):
        load_data(_npz(y=np.zeros(2, np.int64)), "d.npz")


def test_load_data_keeps_arrays_named_like_inputs_for_the_model_to_check():
    ds = load_data(_npz(input_ids=np.ones((3, 4), np.int64), attention_mask=np.ones((3, 4), np.int64),
                        y=np.array([0, 1, 0])), "d.npz")
    assert ds.x_name == "input_ids" and ds.x.dtype == np.int64 and list(ds.feeds) == ["attention_mask"]
    assert ds.subset(2).feeds["attention_mask"].shape == (2, 4)


def test_load_data_raises_when_npz_labels_not_integers():
    with pytest.raises(DataFormatError, match="whole class indices"):
        load_data(_npz(x=np.zeros((2, 2)), y=np.array([0.5, 1.0])), "d.npz")


def test_load_data_raises_when_npz_is_not_a_zip():
    with pytest.raises(DataFormatError, match="not a valid zip"):
        load_data(b"definitely not an npz", "d.npz")


def test_load_data_raises_when_file_exceeds_max_bytes():
    with pytest.raises(FileTooLargeError, match="limit"):
        load_data(_npz(x=np.zeros((100, 100))), "d.npz", max_bytes=1000)


def test_load_data_raises_when_npz_unpacks_beyond_max_bytes():
    data = _npz(x=np.zeros((2000, 100)))
    packed = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    assert len(packed.getvalue()) < 100_000
    with pytest.raises(FileTooLargeError, match="unpacks to"):
        load_data(packed.getvalue(), "d.npz", max_bytes=100_000)


def test_load_data_raises_when_suffix_unknown():
    with pytest.raises(DataFormatError, match=r"\.npz.*\.csv.*\.zip"):
        load_data(b"", "data.parquet")


# ---------------------------------------------------------------- csv ----------------------------
def test_load_data_reads_csv_with_named_label_column():
    csv = b"a,b,species\n1,2.5,0\n3,4,2\n-1,0,1\n"
    ds = load_data(csv, "t.csv", label_column="species")
    assert ds.x.shape == (3, 2) and ds.x.dtype == np.float32
    assert ds.y.tolist() == [0, 2, 1]
    np.testing.assert_array_equal(ds.x[0], [1.0, 2.5])


def test_load_data_finds_target_column_when_label_column_not_given():
    ds = load_data(b"f1,target,f2\n1,1,2\n3,0,4\n", "t.csv")
    assert ds.y.tolist() == [1, 0]
    np.testing.assert_array_equal(ds.x, [[1, 2], [3, 4]])


def test_load_data_reads_headerless_csv_without_labels():
    ds = load_data(b"1,2,3\n4,5,6\n", "t.csv")
    assert ds.y is None and ds.x.shape == (2, 3)


def test_load_data_raises_naming_column_when_csv_value_not_numeric():
    with pytest.raises(DataFormatError, match=r"Column 'b'.*'abc'.*row 2"):
        load_data(b"a,b,label\n1,2,0\n3,abc,1\n", "t.csv")


def test_load_data_raises_when_csv_label_column_missing():
    with pytest.raises(DataFormatError, match=r"'cls' is not in the CSV"):
        load_data(b"a,b\n1,2\n", "t.csv", label_column="cls")


def test_load_data_raises_when_csv_has_empty_cell():
    with pytest.raises(DataFormatError, match=r"Column 'a' has an empty value"):
        load_data(b"a,b\n1,2\n,3\n", "t.csv")


def test_load_data_raises_when_csv_has_no_rows():
    with pytest.raises(DataFormatError, match="no data rows"):
        load_data(b"a,b,label\n", "t.csv")


# ---------------------------------------------------------------- image zip ----------------------
def test_load_data_reads_image_zip_normalised_channels_first():
    data = _zip({
        "cats/a.png": _png((255, 0, 0)),
        "cats/b.png": _png((255, 0, 0)),
        "dogs/c.png": _png(128, mode="L"),
    })
    ds = load_data(data, "imgs.zip", image_size=(8, 6), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert ds.x.shape == (3, 3, 8, 6) and ds.x.dtype == np.float32
    assert ds.y.tolist() == [0, 0, 1] and ds.class_names == ["cats", "dogs"]
    np.testing.assert_allclose(ds.x[0, :, 0, 0], [1.0, -1.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(ds.x[2, :, 3, 3], [(128 / 255 - 0.5) / 0.5] * 3, atol=1e-6)


def test_load_data_uses_numeric_folder_names_as_labels_when_wrapped_in_top_folder():
    data = _zip({"digits/3/a.png": _png(0), "digits/7/b.png": _png(255), "digits/7/c.jpg": _png(10)})
    ds = load_data(data, "d.zip", channels_first=False, channels=1, mean=(0.0,), std=(1.0,))
    assert ds.x.shape == (3, 32, 32, 1)
    assert ds.y.tolist() == [3, 7, 7]
    assert ds.class_names == [str(i) for i in range(8)]


def test_load_data_raises_when_zip_member_escapes_archive():
    data = _zip({"cats/a.png": _png(0), "../evil.png": _png(0)})
    with pytest.raises(UnsafeArchiveError, match="outside the archive"):
        load_data(data, "imgs.zip")


def test_load_data_raises_when_zip_member_path_is_absolute():
    with pytest.raises(UnsafeArchiveError):
        load_data(_zip({"/etc/a.png": _png(0)}), "imgs.zip")


def test_load_data_raises_when_zip_has_no_class_folders():
    with pytest.raises(DataFormatError, match="no class folders"):
        load_data(_zip({"a.png": _png(0), "b.png": _png(0)}), "imgs.zip")


def test_load_data_raises_naming_member_when_image_corrupt():
    with pytest.raises(DataFormatError, match=r"cats/bad.png"):
        load_data(_zip({"cats/bad.png": b"not a png", "cats/ok.png": _png(0)}), "imgs.zip")


def test_load_data_raises_when_zip_unpacks_beyond_max_bytes():
    big = io.BytesIO()
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cats/a.png", b"\0" * 200_000)
    with pytest.raises(FileTooLargeError, match="unpacks to"):
        load_data(big.getvalue(), "imgs.zip", max_bytes=100_000)


def test_load_data_errors_are_optim_errors():
    assert issubclass(UnsafeArchiveError, OptimError) and issubclass(FileTooLargeError, OptimError)


# ---------------------------------------------------------------- check_compatible ---------------
def test_check_compatible_accepts_matching_dataset(tiny_cnn, tiny_images):
    x, y = tiny_images
    check_compatible(tiny_cnn, Dataset(x=x, y=y, name="ok"))


def test_check_compatible_raises_naming_both_shapes(tiny_cnn):
    ds = Dataset(x=np.zeros((4, 3, 32, 32), np.float32), y=None, name="big")
    with pytest.raises(ShapeMismatchError) as err:
        check_compatible(tiny_cnn, ds)
    assert "(3, 16, 16)" in str(err.value) and "(3, 32, 32)" in str(err.value)


def test_check_compatible_raises_when_rank_differs(tiny_mlp):
    ds = Dataset(x=np.zeros((4, 3, 4), np.float32), y=None, name="r")
    with pytest.raises(ShapeMismatchError, match=r"\(12,\).*\(3, 4\)"):
        check_compatible(tiny_mlp, ds)


def test_check_compatible_raises_when_labels_exceed_classes(tiny_mlp):
    ds = Dataset(x=np.zeros((2, 12), np.float32), y=np.array([0, 9]), name="l")
    with pytest.raises(ShapeMismatchError, match="4 classes"):
        check_compatible(tiny_mlp, ds)


def test_check_compatible_raises_when_data_not_float32(tiny_mlp):
    ds = Dataset(x=np.zeros((2, 12), np.float64), y=None, name="f64")
    with pytest.raises(ShapeMismatchError, match="float32"):
        check_compatible(tiny_mlp, ds)


def test_check_compatible_raises_when_model_input_is_integer(tiny_mlp):
    model = tiny_mlp.copy_model()
    model.graph.input[0].type.tensor_type.elem_type = 7  # INT64
    handle = ModelHandle(model=model, name="int")
    with pytest.raises(ShapeMismatchError, match="int64"):
        check_compatible(handle, Dataset(x=np.zeros((2, 12), np.float32), y=None, name="d"))


def test_check_compatible_second_input_must_be_synthesisable(tiny_mlp):
    model = tiny_mlp.copy_model()
    extra = model.graph.input.add()
    extra.CopyFrom(model.graph.input[0])
    extra.name = "mask"
    data = Dataset(np.zeros((1, 12), np.float32), None, "d")
    check_compatible(ModelHandle(model=model, name="two"), data)  # 'mask' (1, 12) is synthesised per batch
    extra.type.tensor_type.shape.dim[1].dim_param = "width"
    with pytest.raises(MissingInputError, match="mask"):
        check_compatible(ModelHandle(model=model, name="two"), data)


def test_check_compatible_accepts_symbolic_batch_dim(tiny_mlp):
    model = tiny_mlp.copy_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    check_compatible(ModelHandle(model=model, name="dyn"), Dataset(np.zeros((5, 12), np.float32), None, "d"))
