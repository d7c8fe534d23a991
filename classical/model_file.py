"""Self-describing model files: a :class:`~tinyqml.classical.models.SmallCNN` that a later step can rebuild.

:func:`~tinyqml.classical.train.save_checkpoint` writes a bare state dict: whoever loads it must
build the right model first. A *model file* also names the architecture and its config, so
:func:`load_model_file` rebuilds the model alone; this is what ``tinyqml train cnn``,
``tinyqml prune`` and ``tinyqml quantize`` hand each other. The file is ``torch.save`` of a
plain dict, read back with ``torch.load(..., weights_only=True)`` (tensors and plain values
only; nothing else is ever unpickled)::

    {"format": "tinyqml-model", "version": 1, "architecture": "SmallCNN",
     "config": {"widths": [16, 32, 32], "in_channels": 1, ...},    # dataclasses.asdict(SmallCNNConfig)
     "state_dict": {...},                                          # tensors, no pruning masks
     "metadata": {...}}                                            # str/int/float/bool/None, lists, dicts

A channel-pruned ``SmallCNN`` (:func:`~tinyqml.classical.channel_pruning.prune_channels`) is
a ``SmallCNN`` with smaller widths and the same state-dict layout; its ``config`` attribute
still holds the widths it was built with, so :func:`config_of` reads the widths from its
convolutions (the default of :func:`save_model_file`). Masks of fine-grained pruning must be
baked in first (``FineGrainedPruner.squash``). ``metadata`` is free-form; the ``tinyqml``
commands keep ``data_seed`` (the digits split), ``metrics`` and ``steps`` there.

Errors are :class:`ModelFileError` subclasses (each a
:class:`~tinyqml.classical.errors.CompressionError`): :class:`ModelFileNotFoundError`,
:class:`NotAModelFileError` (unreadable, a bare state dict, a directory),
:class:`ModelFileFormatError` (another format or a newer version, a bad config, weights that are
not all finite) and :class:`ModelFileMismatchError` (weights that do not fit the config).

>>> import tempfile, torch
>>> from pathlib import Path
>>> from tinyqml.classical.channel_pruning import ChannelPruneConfig, prune_channels
>>> from tinyqml.classical.models import SmallCNN, SmallCNNConfig
>>> tmp = tempfile.TemporaryDirectory()
>>> net = SmallCNN(SmallCNNConfig(widths=(4, 8, 8)), seed=0).eval()
>>> path = save_model_file(Path(tmp.name) / "cnn.pt", net, metadata={"data_seed": 0})
>>> model, config, metadata = load_model_file(path)
>>> config.widths, metadata
((4, 8, 8), {'data_seed': 0})
>>> x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
>>> bool(torch.equal(model(x), net(x)))
True

A channel-pruned model comes back with its own widths:

>>> pruned = prune_channels(net, x, ChannelPruneConfig(ratio=0.5)).model
>>> pruned.config.widths, config_of(pruned).widths
((4, 8, 8), (2, 4, 4))
>>> small, config, _ = load_model_file(save_model_file(Path(tmp.name) / "small.pt", pruned))
>>> config.widths, bool(torch.equal(small(x), pruned(x)))
((2, 4, 4), True)
>>> load_model_file(Path(tmp.name) / "missing.pt")
Traceback (most recent call last):
...
tinyqml.classical.model_file.ModelFileNotFoundError: no model file at .../missing.pt
>>> _ = torch.save(net.state_dict(), Path(tmp.name) / "bare.pt")
>>> load_model_file(Path(tmp.name) / "bare.pt")
Traceback (most recent call last):
...
tinyqml.classical.model_file.NotAModelFileError: .../bare.pt is not a tinyqml model file: it holds a bare state dict ...
>>> tmp.cleanup()
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from tinyqml.classical.errors import CompressionError
from tinyqml.classical.models import SmallCNN, SmallCNNConfig

__all__ = ["FORMAT", "VERSION", "ModelFileError", "ModelFileNotFoundError", "NotAModelFileError",
           "ModelFileFormatError", "ModelFileMismatchError", "config_of", "save_model_file", "load_model_file"]

#: the ``format`` field of every model file
FORMAT = "tinyqml-model"
#: the newest layout version this module writes and reads
VERSION = 1
#: architecture name -> (module class, config class)
_ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {"SmallCNN": (SmallCNN, SmallCNNConfig)}


class ModelFileError(CompressionError):
    """A model file that cannot be written or read; the message names the file and the problem."""


class ModelFileNotFoundError(ModelFileError):
    """There is no file at the path."""


class NotAModelFileError(ModelFileError):
    """The file is not a tinyqml model file: unreadable by ``torch.load(weights_only=True)``, a bare state
    dict, another kind of object, or a directory."""


class ModelFileFormatError(ModelFileError):
    """A model file of another format, a newer version, an architecture or config this tinyqml does not know (or
    config values of the wrong type), or weights that are not all finite (NaN or inf)."""


class ModelFileMismatchError(ModelFileError):
    """The weights do not fit the architecture the file (or the caller) describes: missing or unexpected
    keys, or tensors of other shapes."""


def config_of(model: SmallCNN) -> SmallCNNConfig:
    """The :class:`SmallCNNConfig` of ``model``'s layers as they are now: its ``config`` with the widths read
    from its three convolutions (a channel-pruned copy keeps the widths it was built with in ``config``)."""
    if not isinstance(model, SmallCNN):
        raise ModelFileError(f"config_of reads a SmallCNN, got {type(model).__name__}")
    widths = tuple(m.out_channels for m in model.features if isinstance(m, nn.Conv2d))
    return dataclasses.replace(model.config, widths=widths)


def _plain(value: Any, where: str) -> Any:
    """``value`` with tuples as lists and subclasses of the plain types (numpy numbers, enums) as the plain
    types, checked to hold only what ``weights_only`` loading reads back."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):  # int, numpy ints, IntEnum
        return int(value)
    if isinstance(value, numbers.Real):  # float, numpy floats
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ModelFileError(f"{where} has the key {k!r}; model file metadata keys are strings")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    raise ModelFileError(f"{where} is a {type(value).__name__}; model file metadata holds only str, int, float, "
                         f"bool, None, lists and dicts")


def _architecture(model: nn.Module) -> str:
    for name, (cls, _) in _ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ModelFileError(f"model files hold a {' or '.join(_ARCHITECTURES)}, got {type(model).__name__}")


def _fit(model: nn.Module, state: Mapping[str, Any], what: str) -> None:
    """:class:`ModelFileMismatchError` unless ``state`` has exactly ``model``'s keys and shapes."""
    mine = model.state_dict()
    missing, unexpected = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(mine[k].shape)})" for k in mine
              if k in state and (not isinstance(state[k], torch.Tensor) or state[k].shape != mine[k].shape)]
    if missing or unexpected or shapes:
        parts = ([f"missing {missing[:4]}"] if missing else []) + ([f"unexpected {unexpected[:4]}"] if unexpected
                                                                   else []) + ([f"shapes {shapes[:3]}"] if shapes else [])
        hint = " (pruning masks? bake them in with FineGrainedPruner.squash first)" \
            if any(".parametrizations." in k for k in unexpected) else ""
        raise ModelFileMismatchError(f"{what} do not fit a {type(model).__name__} with {model.config}: "
                                     f"{'; '.join(parts)}{hint}")


def _non_finite(state: Mapping[str, Any]) -> list[str]:
    """The keys of the floating-point tensors of ``state`` that hold a NaN or an infinity."""
    return [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
            and not bool(torch.isfinite(v).all())]


def save_model_file(path: str | os.PathLike, model: nn.Module, config: SmallCNNConfig | None = None,
                    metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (a :class:`SmallCNN`) with ``config`` (default :func:`config_of`) and ``metadata`` at
    ``path`` (folders created; the file is replaced atomically); returns the path."""
    name = _architecture(model)
    config = config_of(model) if config is None else config
    config_cls = _ARCHITECTURES[name][1]
    if not isinstance(config, config_cls):
        raise ModelFileError(f"config must be a {config_cls.__name__}, got {type(config).__name__}")
    meta = _plain(dict(metadata or {}), "metadata")
    state = model.state_dict()
    _fit(SmallCNN(config), state, f"the weights of this {name}")
    bad = _non_finite(state)
    if bad:
        raise ModelFileError(f"the weights of this {name} are not all finite (NaN or inf in {bad[:4]}); a model "
                             f"file holds finite weights (did the training diverge? try a smaller learning rate)")
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory; give the path of the model file to write")
    payload = {"format": FORMAT, "version": VERSION, "architecture": name,
               "config": _plain(dataclasses.asdict(config), "config"),
               "state_dict": {k: v.detach().cpu().clone() for k, v in state.items()}, "metadata": meta}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ModelFileError(f"cannot write the model file {path}: {exc}") from exc
    return path


def _read(path: Path) -> Any:
    if not path.exists():
        raise ModelFileNotFoundError(f"no model file at {path}")
    if path.is_dir():
        raise NotAModelFileError(f"{path} is a directory, not a tinyqml model file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if head[4:8] == b"TFL3":
        raise NotAModelFileError(f"{path} is a TFLite flatbuffer, not a tinyqml model file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about legacy (non-zip) files it then refuses
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # torch.load raises UnpicklingError, RuntimeError, EOFError, ... for other files
        raise NotAModelFileError(f"{path} is not a tinyqml model file: torch cannot read it as a file of "
                                 f"tensors and plain values ({type(exc).__name__})") from exc


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a config value read from a file has the type of the dataclass field annotated ``hint``: ``bool``
    only a bool, ``int`` an int (not a bool), ``float`` an int or a float, ``str`` a str, ``tuple[X, ...]`` /
    ``tuple[X, Y]`` a list or tuple of those (tuples come back from the file as lists)."""
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(params) == 2 and params[1] is Ellipsis:
            return all(_type_ok(v, params[0]) for v in value)
        return len(value) == len(params) and all(_type_ok(v, t) for v, t in zip(value, params))
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, t) for t in params)
    if hint is type(None):
        return value is None
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _config(name: str, fields: Any, path: Path) -> Any:
    config_cls = _ARCHITECTURES[name][1]
    if not isinstance(fields, dict):
        raise ModelFileFormatError(f"{path} has no {config_cls.__name__} (config is a {type(fields).__name__})")
    hints = typing.get_type_hints(config_cls)
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(fields) - known, key=str)
    if unknown:
        raise ModelFileFormatError(f"{path} has a {config_cls.__name__} with fields this tinyqml does not know: "
                                   f"{unknown}")
    for key, value in fields.items():
        if not _type_ok(value, hints[key]):
            raise ModelFileFormatError(f"{path} has a {config_cls.__name__} whose {key} is {value!r} (a "
                                       f"{type(value).__name__}); expected {_type_name(hints[key])}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    try:
        return config_cls(**values)
    except CompressionError as exc:
        raise ModelFileFormatError(f"{path} has an invalid {config_cls.__name__}: {exc}") from exc


def load_model_file(path: str | os.PathLike) -> tuple[nn.Module, SmallCNNConfig, dict[str, Any]]:
    """The model (in eval mode), its config and the metadata of a :func:`save_model_file` file."""
    path = Path(path)
    payload = _read(path)
    if not isinstance(payload, dict):
        raise NotAModelFileError(f"{path} is not a tinyqml model file: it holds a {type(payload).__name__}")
    if "format" not in payload:
        bare = bool(payload) and all(isinstance(v, torch.Tensor) for v in payload.values())
        raise NotAModelFileError(f"{path} is not a tinyqml model file: "
                                 + ("it holds a bare state dict (save_checkpoint) without the architecture"
                                    if bare else "it has no 'format' field"))
    if payload["format"] != FORMAT:
        raise ModelFileFormatError(f"{path} is a {payload['format']!r} file, not a {FORMAT!r} model file")
    version = payload.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileFormatError(f"{path} has no valid version (got {version!r})")
    if version > VERSION:
        raise ModelFileFormatError(f"{path} is a {FORMAT} file of version {version}, written by a newer tinyqml; "
                                   f"this one reads version {VERSION} (upgrade tinyqml)")
    name = payload.get("architecture")
    if not isinstance(name, str) or name not in _ARCHITECTURES:
        raise ModelFileFormatError(f"{path} holds the architecture {name!r}; this tinyqml knows "
                                   f"{list(_ARCHITECTURES)}")
    config = _config(name, payload.get("config"), path)
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileFormatError(f"{path} has no state dict of tensors")
    bad = _non_finite(state)
    if bad:
        raise ModelFileFormatError(f"{path} has weights that are not all finite (NaN or inf in {bad[:4]}); "
                                   f"the file is damaged or its training diverged")
    metadata = payload.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ModelFileFormatError(f"{path} has metadata of type {type(metadata).__name__}, not a dict")
    model = _ARCHITECTURES[name][0](config)
    _fit(model, state, f"the weights in {path}")
    model.load_state_dict(state)
    return model.eval(), config, metadata
