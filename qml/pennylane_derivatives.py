"""Derivatives for the ``tinyqml.qubit`` device: adjoint Jacobians, VJPs and an autograd bridge.

All three re-bind a tape's parameters as torch tensors (the trainable ones as leaves that
require grad), run the device's forward pass in torch and let ``torch.autograd`` do the
rest. The forward pass given to these functions decides how the state is differentiated:
the device passes tinyqml's adjoint method (:class:`tinyqml.qml.fusion.AdjointRun`) for
device derivatives, whose memory does not grow with circuit depth.

Output formats follow PennyLane's conventions for device derivatives (nested tuples over
measurements, then trainable parameters). For a broadcast tape, entry ``[b]`` of a
Jacobian is the derivative of batch row ``b``'s result (for a broadcast parameter: with
respect to that row's value), computed with one backward pass per output column.

The autograd bridge gives ``diff_method="backprop"`` under PennyLane's autograd interface:
the circuit runs as one autograd primitive whose VJP is the torch backward pass. This
module imports PennyLane and autograd; ``import tinyqml.qml`` does not.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pennylane as qml
import torch
from autograd import numpy as anp
from autograd.extend import defvjp, primitive
from autograd.tracer import Box
from pennylane.tape import QuantumScript

from tinyqml.qml.pennylane_ops import TinyQMLDeviceError

Tensor = torch.Tensor
#: a forward pass: a tape with torch parameters -> one torch tensor per measurement
Forward = Callable[[QuantumScript], list]


def _pack(tape: QuantumScript, per_mp: list[Any]) -> Any:
    return per_mp[0] if len(tape.measurements) == 1 else tuple(per_mp)


def to_numpy(t: Any) -> Any:
    """A torch tensor as a numpy array (anything else unchanged)."""
    return t.detach().cpu().numpy() if isinstance(t, Tensor) else t


def _real_numpy(t: Tensor) -> np.ndarray:
    t = t.detach()
    return (t.real if t.is_complex() else t).cpu().numpy()


def _torch_value(a: np.ndarray) -> Tensor:
    """A constant parameter as a torch tensor (float64/complex128; integers stay integers)."""
    dtype = torch.complex128 if np.iscomplexobj(a) else (torch.float64 if a.dtype.kind == "f" else None)
    return torch.tensor(a, dtype=dtype)


def torch_tape(tape: QuantumScript, expand_batch: bool = False) -> tuple[QuantumScript, list[Tensor], list[bool]]:
    """The tape with torch parameters; the trainable ones are leaves that require grad.

    Also returns, per leaf, whether it has one row per batch entry. With ``expand_batch``
    (Jacobians of broadcast tapes) every trainable operation parameter gets such rows
    (shared ones are copied), so one backward pass gives every row's derivative.
    """
    params = tape.get_parameters(trainable_only=False)
    trainable = set(tape.trainable_params)
    n_ops = len(tape.operations)
    values, leaves, rows = [], [], []
    for i, p in enumerate(params):
        a = np.asarray(qml.math.unwrap(p))
        if i not in trainable:
            values.append(_torch_value(a))
            continue
        if np.iscomplexobj(a):
            raise TinyQMLDeviceError(
                f"device derivatives need real trainable parameters; parameter {i} is complex (use backprop)")
        info = tape.par_info[i]
        per_row = expand_batch and info["op_idx"] < n_ops
        if per_row and info["op"].batch_size is None:
            a = np.broadcast_to(a, (tape.batch_size,) + a.shape).copy()
        t = torch.tensor(a, dtype=torch.float64, requires_grad=True)
        values.append(t)
        leaves.append(t)
        rows.append(per_row)
    return tape.bind_new_parameters(values, list(range(len(params)))), leaves, rows


def _grad(out: Tensor, leaves: list[Tensor]) -> list[Tensor]:
    if not out.requires_grad:  # a result that depends on no trainable parameter
        return [torch.zeros_like(leaf) for leaf in leaves]
    gs = torch.autograd.grad(out, leaves, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(gs, leaves)]


# --------------------------------------------------------------------------- Jacobians


def _jac_unbatched(out: Tensor, leaves: list[Tensor]) -> list[np.ndarray]:
    """Per leaf ``d out / d leaf``, shaped ``out.shape + leaf.shape``."""
    flat = out.reshape(-1)
    per_col = [_grad(flat[c], leaves) for c in range(flat.shape[0])]
    return [_real_numpy(torch.stack([g[k] for g in per_col]).reshape(out.shape + leaf.shape))
            for k, leaf in enumerate(leaves)]


def _jac_batched(out: Tensor, leaves: list[Tensor], rows: list[bool]) -> list[np.ndarray]:
    """Per leaf, row ``b`` holds ``d out[b] / d leaf[b]`` (per-row leaves) or ``d out[b] / d leaf``."""
    batch = out.shape[0]
    flat = out.reshape(batch, -1)
    cols: list[list[Tensor]] = [[] for _ in leaves]
    for c in range(flat.shape[1]):
        summed = _grad(flat[:, c].sum(), leaves) if any(rows) else []
        per_b = [] if all(rows) else [_grad(flat[b, c], leaves) for b in range(batch)]
        for k in range(len(leaves)):
            cols[k].append(summed[k] if rows[k] else torch.stack([g[k] for g in per_b]))
    jac = []
    for k, leaf in enumerate(leaves):
        pshape = tuple(leaf.shape[1:]) if rows[k] else tuple(leaf.shape)
        stacked = torch.stack(cols[k], 1)  # [B, C, *pshape]
        jac.append(_real_numpy(stacked.reshape((batch,) + tuple(out.shape[1:]) + pshape)))
    return jac


@torch.enable_grad()
def jacobian(tape: QuantumScript, forward: Forward) -> tuple[Any, Any]:
    """``(results, jacobian)`` of one tape in PennyLane's formats."""
    batched = tape.batch_size is not None
    tape_t, leaves, rows = torch_tape(tape, expand_batch=batched)
    outs = forward(tape_t)
    results = _pack(tape, [to_numpy(o) for o in outs])
    per_mp: list[Any] = []
    for out in outs:
        if not leaves:
            per_mp.append(())
            continue
        entries = _jac_batched(out, leaves, rows) if batched else _jac_unbatched(out, leaves)
        per_mp.append(entries[0] if len(entries) == 1 else tuple(entries))
    return results, _pack(tape, per_mp)


# --------------------------------------------------------------------------- VJPs


@torch.enable_grad()
def vjp(tape: QuantumScript, cotangents: Any, forward: Forward) -> tuple[Any, tuple]:
    """``(results, vjp)``: one backward pass of ``sum_m <dy_m, result_m>`` per tape."""
    tape_t, leaves, _ = torch_tape(tape)
    outs = forward(tape_t)
    results = _pack(tape, [to_numpy(o) for o in outs])
    if not leaves:
        return results, ()
    dys = [cotangents] if len(tape.measurements) == 1 else list(cotangents)
    loss = sum((o * torch.as_tensor(np.asarray(qml.math.unwrap(d)), dtype=o.dtype)).sum() for o, d in zip(outs, dys))
    return results, tuple(_real_numpy(g) for g in _grad(loss, leaves))


# --------------------------------------------------------------------------- autograd backprop


def has_autograd_params(tape: QuantumScript) -> bool:
    """Whether autograd is tracing any of the tape's parameters."""
    return any(isinstance(p, Box) for p in tape.get_parameters(trainable_only=False))


def _real_flat(outs: list[Tensor]) -> Tensor:
    """Every result flattened into one real vector (complex values as (re, im) pairs)."""
    parts = [torch.view_as_real(o.resolve_conj()) if o.is_complex() else o for o in outs]
    return torch.cat([p.reshape(-1).to(torch.float64) for p in parts])


@primitive
def _run_flat(theta: np.ndarray, tape: QuantumScript, boxed: tuple, forward: Forward, ctx: dict) -> np.ndarray:
    """Autograd primitive: the boxed parameters (flattened into ``theta``) -> flat real results."""
    leaf = torch.tensor(np.asarray(theta, dtype=np.float64), requires_grad=True)
    params = [np.asarray(qml.math.unwrap(p)) for p in tape.get_parameters(trainable_only=False)]
    values: list[Any] = [_torch_value(a) for a in params]
    pos = 0
    for i in boxed:
        size = int(np.prod(params[i].shape))
        values[i] = leaf[pos: pos + size].reshape(params[i].shape)
        pos += size
    tape_t = tape.bind_new_parameters(values, list(range(len(values))))
    with torch.enable_grad():
        outs = forward(tape_t)
        flat = _real_flat(outs)
    ctx.update(leaf=leaf, flat=flat, layout=[(tuple(o.shape), o.is_complex()) for o in outs])
    return flat.detach().cpu().numpy()


def _run_flat_vjp(ans: np.ndarray, theta: np.ndarray, tape: QuantumScript, boxed: tuple, forward: Forward,
                  ctx: dict) -> Callable[[np.ndarray], np.ndarray]:
    return lambda g: _flat_vjp(g, theta, ctx)


@primitive
def _flat_vjp(g: np.ndarray, theta: np.ndarray, ctx: dict) -> np.ndarray:
    """Autograd primitive: ``J(theta)^T g`` by one torch backward pass (itself differentiable once more)."""
    gt = torch.as_tensor(np.asarray(g, dtype=np.float64))
    (grad,) = torch.autograd.grad(ctx["flat"], ctx["leaf"], grad_outputs=gt, retain_graph=True, allow_unused=True)
    return np.zeros_like(np.asarray(theta, dtype=np.float64)) if grad is None else grad.detach().cpu().numpy()


def _second_order(u: np.ndarray, g: np.ndarray, ctx: dict, wrt_g: bool) -> np.ndarray:
    """``d (u . J^T g)`` w.r.t. ``g`` (a JVP) or ``theta`` (a Hessian-vector product) by double backward."""
    g_t = torch.tensor(np.asarray(g, dtype=np.float64), requires_grad=True)
    with torch.enable_grad():
        (jtg,) = torch.autograd.grad(ctx["flat"], ctx["leaf"], grad_outputs=g_t, create_graph=True, retain_graph=True)
        target = g_t if wrt_g else ctx["leaf"]
        ut = torch.as_tensor(np.asarray(u, dtype=np.float64))
        (res,) = torch.autograd.grad(jtg, target, grad_outputs=ut, retain_graph=True, allow_unused=True)
    return np.zeros(tuple(target.shape)) if res is None else res.detach().cpu().numpy()


defvjp(_flat_vjp,
       lambda ans, g, theta, ctx: lambda u: _second_order(u, g, ctx, wrt_g=True),
       lambda ans, g, theta, ctx: lambda u: _second_order(u, g, ctx, wrt_g=False))


defvjp(_run_flat, _run_flat_vjp)


def _unflatten(flat: Any, layout: list[tuple[tuple[int, ...], bool]]) -> list[Any]:
    out, pos = [], 0
    for shape, is_complex in layout:
        size = int(np.prod(shape)) * (2 if is_complex else 1)
        seg = flat[pos: pos + size]
        pos += size
        if is_complex:
            pair = anp.reshape(seg, shape + (2,))
            out.append(pair[..., 0] + 1j * pair[..., 1])
        else:
            out.append(anp.reshape(seg, shape))
    return out


def autograd_backprop(tape: QuantumScript, forward: Forward) -> Any:
    """Analytic results of a tape whose parameters autograd traces, differentiable by autograd."""
    params = tape.get_parameters(trainable_only=False)
    boxed = tuple(i for i, p in enumerate(params) if isinstance(p, Box))
    if any(np.iscomplexobj(qml.math.unwrap(params[i])) for i in boxed):
        raise TinyQMLDeviceError("backprop under autograd needs real trainable parameters; "
                                 "use the torch interface for complex ones")
    theta = anp.concatenate([anp.reshape(params[i], (-1,)) for i in boxed])
    ctx: dict = {}
    flat = _run_flat(theta, tape, boxed, forward, ctx)
    return _pack(tape, _unflatten(flat, ctx["layout"]))
