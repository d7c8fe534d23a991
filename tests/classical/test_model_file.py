"""Tests of tinyqml.classical.model_file: self-describing SmallCNN files, loaded without unpickling objects."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyqml.classical.channel_pruning import ChannelPruneConfig, prune_channels
from tinyqml.classical.errors import CompressionError
from tinyqml.classical.model_file import (
    FORMAT,
    VERSION,
    ModelFileError,
    ModelFileFormatError,
    ModelFileMismatchError,
    ModelFileNotFoundError,
    NotAModelFileError,
    config_of,
    load_model_file,
    save_model_file,
)
from tinyqml.classical.models import SmallCNN, SmallCNNConfig, TinyMobileNetV2
from tinyqml.classical.pruning import FineGrainedConfig, FineGrainedPruner

X = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def net() -> SmallCNN:
    return SmallCNN(SmallCNNConfig(widths=(4, 8, 8), pool_after=0, dropout=0.1), seed=3).eval()


@pytest.fixture
def saved(tmp_path: Path, net: SmallCNN) -> Path:
    return save_model_file(tmp_path / "m.pt", net, metadata={"data_seed": 2})


def _rewrite(path: Path, **changes: object) -> Path:
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)
    return path


def test_round_trip_rebuilds_the_model_config_and_metadata(tmp_path: Path, net: SmallCNN) -> None:
    metadata = {"data_seed": 7, "metrics": {"test_accuracy": 91.5, "macs": 10}, "steps": [{"command": "x"}],
                "note": None, "flag": True, "pair": (1, 2), "numpy": np.float64(0.5), "count": np.int64(3)}
    path = save_model_file(tmp_path / "sub" / "dir" / "m.pt", net, net.config, metadata)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temp file left
    model, config, meta = load_model_file(path)
    assert type(model) is SmallCNN and not model.training
    assert config == net.config == model.config
    assert meta == {**metadata, "pair": [1, 2]}  # tuples come back as lists
    assert type(meta["numpy"]) is float and type(meta["count"]) is int
    assert torch.equal(model(X), net(X))
    for a, b in zip(model.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)


def test_the_file_is_plain_data_loadable_with_weights_only(saved: Path) -> None:
    payload = torch.load(saved, weights_only=True)
    assert payload["format"] == FORMAT and payload["version"] == VERSION and payload["architecture"] == "SmallCNN"
    assert payload["config"]["widths"] == [4, 8, 8] and payload["config"]["pool_after"] == 0
    assert payload["metadata"] == {"data_seed": 2}
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())


def test_a_channel_pruned_model_is_stored_with_its_new_widths(tmp_path: Path, net: SmallCNN) -> None:
    pruned = prune_channels(net, X, ChannelPruneConfig(ratio=0.5)).model.eval()
    assert pruned.config.widths == (4, 8, 8)  # stale: the widths it was built with
    assert config_of(pruned) == SmallCNNConfig(widths=(2, 4, 4), pool_after=0, dropout=0.1)
    model, config, _ = load_model_file(save_model_file(tmp_path / "p.pt", pruned))
    assert config.widths == (2, 4, 4) == model.config.widths
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in pruned.parameters())
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in net.parameters())
    assert torch.allclose(model(X), pruned(X), atol=0, rtol=0)


def test_masks_must_be_baked_in_first(tmp_path: Path, net: SmallCNN) -> None:
    masked = copy.deepcopy(net)
    pruner = FineGrainedPruner(masked, FineGrainedConfig(sparsity=0.5))
    pruner.apply()
    with pytest.raises(ModelFileMismatchError, match="squash"):
        save_model_file(tmp_path / "m.pt", masked)
    assert not (tmp_path / "m.pt").exists()
    pruner.squash()
    model, _, _ = load_model_file(save_model_file(tmp_path / "m.pt", masked))
    assert torch.equal(model(X), masked(X))
    assert float((model.features[0].weight == 0).float().mean()) > 0


def test_save_refuses_what_it_cannot_describe(tmp_path: Path, net: SmallCNN) -> None:
    with pytest.raises(ModelFileError, match="SmallCNN, got TinyMobileNetV2"):
        save_model_file(tmp_path / "m.pt", TinyMobileNetV2())
    with pytest.raises(ModelFileError, match="config must be a SmallCNNConfig"):
        save_model_file(tmp_path / "m.pt", net, {"widths": (4, 8, 8)})  # type: ignore[arg-type]
    with pytest.raises(ModelFileMismatchError, match="shapes"):
        save_model_file(tmp_path / "m.pt", net, SmallCNNConfig(widths=(4, 8, 16), pool_after=0))
    with pytest.raises(ModelFileError, match=r"metadata\['x'\] is a Tensor"):
        save_model_file(tmp_path / "m.pt", net, metadata={"x": torch.zeros(1)})
    with pytest.raises(ModelFileError, match="keys are strings"):
        save_model_file(tmp_path / "m.pt", net, metadata={"a": {1: 2}})
    with pytest.raises(ModelFileError, match="is a directory"):
        save_model_file(tmp_path, net)
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileNotFoundError, match=r"no model file at .*nope\.pt"):
        load_model_file(tmp_path / "nope.pt")


@pytest.mark.parametrize("content, message", [
    (b"", "torch cannot read it"),
    (b"garbage, not a model", "torch cannot read it"),
    (b"\x1c\x00\x00\x00TFL3" + bytes(40), "is a TFLite flatbuffer"),
])
def test_unreadable_files_are_not_model_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(NotAModelFileError, match=message) as exc:
        load_model_file(path)
    assert str(path) in str(exc.value) and "weights_only=False" not in str(exc.value)


def test_a_directory_is_not_a_model_file(tmp_path: Path) -> None:
    with pytest.raises(NotAModelFileError, match="is a directory"):
        load_model_file(tmp_path)


def test_a_bare_state_dict_and_other_objects_are_not_model_files(tmp_path: Path, net: SmallCNN) -> None:
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(NotAModelFileError, match="bare state dict"):
        load_model_file(tmp_path / "bare.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(NotAModelFileError, match="holds a list"):
        load_model_file(tmp_path / "list.pt")
    torch.save({"weights": 1}, tmp_path / "dict.pt")
    with pytest.raises(NotAModelFileError, match="no 'format' field"):
        load_model_file(tmp_path / "dict.pt")


class _Planted:
    """An object whose unpickling would create a marker file: loading must never run it."""

    marker: Path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_pickled_objects_are_never_unpickled(tmp_path: Path, saved: Path) -> None:
    planted = _Planted()
    planted.marker = tmp_path / "ran"
    _rewrite(saved, metadata={"x": planted})
    with pytest.raises(NotAModelFileError, match="torch cannot read it"):
        load_model_file(saved)
    assert not planted.marker.exists()


@pytest.mark.parametrize("changes, message", [
    ({"format": "tinyqml-supernet"}, "is a 'tinyqml-supernet' file, not a 'tinyqml-model' model file"),
    ({"version": VERSION + 1}, f"version {VERSION + 1}, written by a newer tinyqml"),
    ({"version": "1"}, "no valid version"),
    ({"architecture": "ResNet"}, "architecture 'ResNet'"),
    ({"config": {"widths": [4, 8, -1]}}, r"invalid SmallCNNConfig: widths\[2\] must be a positive int"),
    ({"config": {"widths": [4, 8, 8], "depth": 9}}, r"does not know: \['depth'\]"),
    ({"config": [4, 8, 8]}, "has no SmallCNNConfig"),
    ({"state_dict": [1]}, "no state dict of tensors"),
    ({"metadata": [1]}, "metadata of type list"),
])
def test_wrong_format_version_or_config(saved: Path, changes: dict, message: str) -> None:
    _rewrite(saved, **changes)
    with pytest.raises(ModelFileFormatError, match=message):
        load_model_file(saved)


def test_weights_that_do_not_fit_the_config(saved: Path, net: SmallCNN) -> None:
    payload = torch.load(saved, weights_only=True)
    _rewrite(saved, config={**payload["config"], "widths": [4, 8, 6]})
    with pytest.raises(ModelFileMismatchError, match=r"shapes \['features\.7\.weight \(8, 8, 3, 3\) \(expected "
                                                     r"\(6, 8, 3, 3\)\)'"):
        load_model_file(saved)
    state = dict(payload["state_dict"])
    del state["head.2.bias"]
    state["extra"] = torch.zeros(1)
    _rewrite(saved, config=payload["config"], state_dict=state)
    with pytest.raises(ModelFileMismatchError, match=r"missing \['head\.2\.bias'\]; unexpected \['extra'\]"):
        load_model_file(saved)


def test_every_error_is_a_compression_error() -> None:
    for cls in (ModelFileError, ModelFileNotFoundError, NotAModelFileError, ModelFileFormatError,
                ModelFileMismatchError):
        assert issubclass(cls, CompressionError) and issubclass(cls, ModelFileError)


@pytest.mark.parametrize("architecture", [["SmallCNN"], {"name": "SmallCNN"}, 1, None])
def test_an_architecture_that_is_not_a_name(saved: Path, architecture: object) -> None:
    _rewrite(saved, architecture=architecture)  # a list was: TypeError: unhashable type: 'list'
    with pytest.raises(ModelFileFormatError, match=r"holds the architecture .*; this tinyqml knows \['SmallCNN'\]"):
        load_model_file(saved)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_weights_that_are_not_finite_are_refused(saved: Path, value: float) -> None:
    payload = torch.load(saved, weights_only=True)
    state = dict(payload["state_dict"])
    state["features.0.weight"] = state["features.0.weight"].clone()
    state["features.0.weight"][0, 0, 0, 0] = value
    _rewrite(saved, state_dict=state)
    with pytest.raises(ModelFileFormatError, match=r"not all finite \(NaN or inf in \['features\.0\.weight'\]\)"):
        load_model_file(saved)


def test_save_refuses_weights_that_are_not_finite(tmp_path: Path, net: SmallCNN) -> None:
    broken = copy.deepcopy(net)
    with torch.no_grad():
        broken.head[-1].bias[0] = float("nan")
    with pytest.raises(ModelFileError, match=r"not all finite \(NaN or inf in \['head\.2\.bias'\]\)"):
        save_model_file(tmp_path / "m.pt", broken)
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("field, value, expected", [
    ("flatten", "no", "bool"),           # a non-empty string is truthy: was read as flatten=True
    ("flatten", 0, "bool"),
    ("pool_after", True, "int"),         # True == 1 passed `in (0, 1, 2)`
    ("pool_after", 1.0, "int"),
    ("in_channels", "1", "int"),
    ("dropout", "0.1", "float"),
    ("dropout", False, "float"),
    ("widths", [4, 8, 8.0], "tuple[int, int, int]"),
    ("widths", [4, True, 8], "tuple[int, int, int]"),
    ("widths", "488", "tuple[int, int, int]"),
])
def test_config_values_of_the_wrong_type(saved: Path, field: str, value: object, expected: str) -> None:
    payload = torch.load(saved, weights_only=True)
    _rewrite(saved, config={**payload["config"], field: value})
    with pytest.raises(ModelFileFormatError, match=rf"SmallCNNConfig whose {field} is .*; expected "
                                                   rf"{re.escape(expected)}$"):
        load_model_file(saved)


def test_config_values_of_the_right_types_load(tmp_path: Path) -> None:
    path = save_model_file(tmp_path / "m.pt", SmallCNN(SmallCNNConfig(widths=(4, 8, 8), dropout=0.0)))
    payload = torch.load(path, weights_only=True)
    _rewrite(path, config={**payload["config"], "dropout": 0})  # an int where a float goes is a number
    _, config, _ = load_model_file(path)
    assert config.dropout == 0 and config.flatten is True and config.widths == (4, 8, 8)
