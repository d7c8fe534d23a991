"""The simulator on a CUDA device gives the CPU's numbers (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

import tinyqml.qml as tq

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _circuit(n: int) -> tq.Circuit:
    b = tq.CircuitBuilder(n)
    for i in range(n):
        b.ry(i, tq.feature(i))
    k = 0
    for _ in range(3):
        for i in range(n):
            b.ry(i, tq.weight(k)).rz(i, tq.weight(k + 1))
            k += 2
        for i in range(n):
            b.cx(i, (i + 1) % n)
        b.crx(0, 1, tq.weight(k)).u(2, tq.weight(k + 1), 0.3, tq.feature(0)).cz(1, 2)
        k += 2
    return b.build()


@pytest.mark.parametrize("method", ["backprop", "adjoint", "parameter-shift"])
def test_cuda_matches_cpu(method: str) -> None:
    n = 5
    c = _circuit(n)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, n, generator=g, dtype=torch.float64)
    w = torch.rand(c.n_weights, generator=g, dtype=torch.float64)
    obs = [tq.Z(i) for i in range(n)] + [tq.X(0) @ tq.Y(2)]
    out = {}
    for dev in ("cpu", "cuda"):
        wd = w.to(dev).requires_grad_(True)
        e = tq.expval(c, obs, weights=wd, inputs=x.to(dev), diff_method=method)
        assert e.device.type == dev
        e.sum().backward()
        out[dev] = (e.detach().cpu(), wd.grad.cpu())
    torch.testing.assert_close(out["cuda"][0], out["cpu"][0], atol=1e-10, rtol=0)
    torch.testing.assert_close(out["cuda"][1], out["cpu"][1], atol=1e-9, rtol=0)


def test_layer_moves_to_cuda() -> None:
    c = _circuit(4)
    layer = tq.QuantumLayer(c, [tq.Z(0), tq.Z(3)], seed=1)
    x = torch.rand(9, 4, dtype=torch.float64)
    ref = layer(x)
    gpu = layer.to("cuda")(x.to("cuda"))
    torch.testing.assert_close(gpu.cpu(), ref.detach(), atol=1e-10, rtol=0)
    s = tq.sample(c, 16, weights=layer.weights.detach(), inputs=x.to("cuda")[:2],
                  generator=torch.Generator().manual_seed(0))
    assert s.device.type == "cuda" and s.shape == (2, 16, 4)
