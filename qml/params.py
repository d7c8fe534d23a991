"""Resolve a circuit's parameter references to angles, checking weights and inputs.

Every parameter slot of a circuit (one per gate parameter, in operation order) gets
an angle. The result has shape ``[Ba, P]`` with ``Ba = B`` when any slot reads input
features and ``Ba = 1`` otherwise; it is differentiable w.r.t. weights and inputs.

>>> import torch, tinyqml.qml as tq
>>> c = tq.CircuitBuilder(1).ry(0, tq.feature(0)).rz(0, tq.weight(0, scale=2.0)).build()
>>> angles, batched = resolve(c, torch.tensor([0.25]), torch.tensor([[1.0], [2.0]]))
>>> angles
tensor([[1.0000, 0.5000],
        [2.0000, 0.5000]], dtype=torch.float64)
>>> batched
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tinyqml.qml.circuit import Circuit
from tinyqml.qml.errors import NonFiniteError, ShapeError

Tensor = torch.Tensor


@dataclass(frozen=True)
class SlotTable:
    """Index tensors describing every parameter slot (built once per circuit)."""

    n_slots: int
    const_pos: tuple[int, ...]
    const_val: tuple[float, ...]
    weight_pos: tuple[int, ...]
    weight_idx: tuple[int, ...]
    weight_scale: tuple[float, ...]
    weight_off: tuple[float, ...]
    feat_pos: tuple[int, ...]
    feat_idx: tuple[tuple[int, ...], ...]
    feat_scale: tuple[float, ...]
    feat_off: tuple[float, ...]
    feat_shift: tuple[float, ...]

    @property
    def batched_slots(self) -> tuple[bool, ...]:
        out = [False] * self.n_slots
        for p in self.feat_pos:
            out[p] = True
        return tuple(out)


def slot_table(circuit: Circuit) -> SlotTable:
    cached = circuit.__dict__.get("_tinyqml_slots")
    if cached is not None:
        return cached
    cols: dict[str, list[Any]] = {k: [] for k in SlotTable.__dataclass_fields__ if k != "n_slots"}
    pos = 0
    for op in circuit.ops:
        for p in op.params:
            if p.kind == "const":
                cols["const_pos"].append(pos)
                cols["const_val"].append(p.scale * p.value + p.offset)
            elif p.kind == "weight":
                cols["weight_pos"].append(pos)
                cols["weight_idx"].append(p.index[0])
                cols["weight_scale"].append(p.scale)
                cols["weight_off"].append(p.offset)
            else:
                cols["feat_pos"].append(pos)
                cols["feat_idx"].append(p.index)
                cols["feat_scale"].append(p.scale)
                cols["feat_off"].append(p.offset)
                cols["feat_shift"].append(p.feature_shift)
            pos += 1
    table = SlotTable(n_slots=pos, **{k: tuple(v) for k, v in cols.items()})
    object.__setattr__(circuit, "_tinyqml_slots", table)
    return table


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.complex64, torch.float32) else torch.float64


def check_weights(circuit: Circuit, weights: Any, rdtype: torch.dtype, device: Any) -> Tensor:
    """Weights as a 1-D tensor of length ``circuit.n_weights`` (named errors otherwise)."""
    nw = circuit.n_weights
    if weights is None:
        if nw:
            raise ShapeError(f"the circuit has {nw} trainable weights but weights=None was given")
        return torch.zeros(0, dtype=rdtype, device=device)
    w = weights if isinstance(weights, torch.Tensor) else torch.as_tensor(weights)
    if w.is_complex():
        raise ShapeError("weights must be real numbers, got a complex tensor")
    if w.dim() != 1 or w.shape[0] != nw:
        raise ShapeError(f"weights must have shape [{nw}] (circuit.n_weights), got {list(w.shape)}")
    if not torch.isfinite(w).all():
        raise NonFiniteError("weights contain NaN or inf")
    return w.to(device=device, dtype=rdtype) if device is not None else w.to(rdtype)


def check_inputs(circuit: Circuit, inputs: Any, rdtype: torch.dtype, device: Any) -> Tensor | None:
    """Inputs as ``[B, circuit.n_inputs]`` (a 1-D vector is one sample)."""
    ni = circuit.n_inputs
    if inputs is None:
        if ni:
            raise ShapeError(f"the circuit reads {ni} input features but inputs=None was given")
        return None
    x = inputs if isinstance(inputs, torch.Tensor) else torch.as_tensor(inputs)
    if x.is_complex():
        raise ShapeError("inputs must be real numbers, got a complex tensor")
    given = list(x.shape)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[1] != ni:
        raise ShapeError(f"inputs must have shape [batch, {ni}] (circuit.n_inputs), got {given}")
    if x.shape[0] == 0:
        raise ShapeError("inputs have an empty batch")
    if not torch.isfinite(x).all():
        raise NonFiniteError("inputs contain NaN or inf")
    return x.to(device=device, dtype=rdtype) if device is not None else x.to(rdtype)


def resolve(circuit: Circuit, weights: Any = None, inputs: Any = None, dtype: torch.dtype = torch.float64,
            device: Any = None) -> tuple[Tensor, tuple[bool, ...]]:
    """Angles ``[Ba, P]`` for every parameter slot, and which slots vary over the batch."""
    rdtype = _real_dtype(dtype)
    w = check_weights(circuit, weights, rdtype, device)
    x = check_inputs(circuit, inputs, rdtype, device)
    dev = w.device if x is None else x.device
    if device is None and x is not None and w.numel():
        w = w.to(x.device)
    t = slot_table(circuit)
    batch = 1 if x is None or not t.feat_pos else x.shape[0]
    angles = torch.zeros(batch, t.n_slots, dtype=rdtype, device=dev)
    if t.const_pos:
        angles[:, list(t.const_pos)] = torch.tensor(t.const_val, dtype=rdtype, device=dev)
    if t.weight_pos:
        sc = torch.tensor(t.weight_scale, dtype=rdtype, device=dev)
        off = torch.tensor(t.weight_off, dtype=rdtype, device=dev)
        vals = w[list(t.weight_idx)] * sc + off
        angles = angles.index_put((torch.arange(batch, device=dev)[:, None], torch.tensor(t.weight_pos, device=dev)),
                                  vals.expand(batch, -1))
    if t.feat_pos:
        assert x is not None
        angles = angles.index_put(
            (torch.arange(batch, device=dev)[:, None], torch.tensor(t.feat_pos, device=dev)), _features(t, x)
        )
    if t.n_slots and not bool(torch.isfinite(angles.detach()).all()):
        raise NonFiniteError(
            f"a gate angle (scale * value + offset of a parameter) overflows {rdtype}: a constant, weight, "
            f"input or parameter scale/offset is too large; accepted: angles of magnitude up to "
            f"{torch.finfo(rdtype).max:.3g} ({'complex64' if rdtype == torch.float32 else 'complex128'})")
    return angles, t.batched_slots if batch > 1 else (False,) * t.n_slots


def _features(t: SlotTable, x: Tensor) -> Tensor:
    k = max(len(i) for i in t.feat_idx)
    dev, rdtype = x.device, x.dtype
    idx = torch.tensor([i + (0,) * (k - len(i)) for i in t.feat_idx], device=dev)
    mask = torch.tensor([[j < len(i) for j in range(k)] for i in t.feat_idx], device=dev)
    shift = torch.tensor(t.feat_shift, dtype=rdtype, device=dev)
    vals = x[:, idx] + shift[None, :, None]
    vals = torch.where(mask, vals, torch.ones_like(vals)).prod(-1)
    sc = torch.tensor(t.feat_scale, dtype=rdtype, device=dev)
    off = torch.tensor(t.feat_off, dtype=rdtype, device=dev)
    return vals * sc + off
