"""BatchNorm folding: each ``BatchNorm`` that directly follows a conv (its only user) is merged into it.

In eval mode ``bn(conv(x)) = conv'(x)`` with ``w' = w * g / sqrt(var + eps)`` per output
channel and ``b' = (b - mean) * g / sqrt(var + eps) + beta``. :func:`fold_batchnorm`
finds the pairs with ``torch.fx`` and returns a copy of the model (same class, the
folded norms replaced by ``nn.Identity``, the convs given a bias) that equals the
original in eval mode. A norm whose input is not a conv's output used by it alone
stays as it is (:func:`foldable_pairs` lists what is folded).

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
>>> _ = net(torch.rand(8, 1, 6, 6)); net = net.eval()   # some running statistics
>>> folded = fold_batchnorm(net)
>>> foldable_pairs(net), type(folded[1]).__name__
([('0', '1')], 'Identity')
>>> x = torch.rand(2, 1, 6, 6); bool(torch.allclose(folded(x), net(x), atol=1e-6))
True
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

from tinyqml.classical.errors import CompressionError, UnsupportedLayerError
from tinyqml.classical.pruning import baked_copy

__all__ = ["fold_batchnorm", "foldable_pairs", "fold_conv_bn"]

_CONV = (nn.Conv1d, nn.Conv2d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d)


def fold_conv_bn(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """A new conv equal to ``bn(conv(x))`` with ``bn``'s running statistics (eval mode)."""
    if not isinstance(conv, _CONV) or not isinstance(bn, _NORM):
        raise UnsupportedLayerError(f"fold_conv_bn folds a Conv1d/2d and a BatchNorm1d/2d, got "
                                    f"{type(conv).__name__} and {type(bn).__name__}")
    if not bn.track_running_stats or bn.running_var is None:
        raise UnsupportedLayerError("a BatchNorm without running statistics cannot be folded")
    if bn.num_features != conv.out_channels:
        raise CompressionError(f"the conv has {conv.out_channels} output channels, the norm {bn.num_features}")
    w = conv.weight.detach()
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach()
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(scale)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
    new = baked_copy(conv)
    if new.bias is None:
        new.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=w.dtype, device=w.device))
    with torch.no_grad():
        new.weight.copy_(w * scale.reshape(-1, *([1] * (w.dim() - 1))))
        new.bias.copy_((bias - bn.running_mean) * scale + shift)
    return new


def foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv name, norm name)`` of every norm whose input is a conv's output used only by that norm."""
    if not isinstance(model, nn.Module):
        raise CompressionError(f"fold_batchnorm needs an nn.Module, got {type(model).__name__}")
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, ... for untraceable forwards
        raise UnsupportedLayerError(f"{type(model).__name__} cannot be traced by torch.fx: {exc}") from exc
    modules = dict(gm.named_modules())
    seen: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            seen[node.target] = seen.get(node.target, 0) + 1
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _NORM) or not node.args:
            continue
        src = node.args[0]
        if (isinstance(src, torch.fx.Node) and src.op == "call_module" and isinstance(modules[src.target], _CONV)
                and len(src.users) == 1 and seen[src.target] == 1 and seen[node.target] == 1):
            pairs.append((src.target, node.target))
    return pairs


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (masks baked in) with every foldable BatchNorm merged into its conv, in eval mode."""
    if not isinstance(model, nn.Module):
        raise CompressionError(f"fold_batchnorm needs an nn.Module, got {type(model).__name__}")
    new = baked_copy(model).eval()
    for conv_name, bn_name in foldable_pairs(new):
        _set(new, conv_name, fold_conv_bn(new.get_submodule(conv_name), new.get_submodule(bn_name)))
        _set(new, bn_name, nn.Identity())
    return new


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)
