"""Tests of tinyqml.classical.kmeans: 1-D k-means, codebook parametrization, fine-tuning, storage."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinyqml.classical.errors import AlreadyQuantizedError, CompressionError, LayerNotFoundError, \
    UnsupportedLayerError
from tinyqml.classical.kmeans import Codebook, KMeansConfig, KMeansInit, codebook_of, has_codebook, kmeans_1d, \
    kmeans_quantize, kmeans_squash, kmeans_storage
from tinyqml.search.masks import attach_mask


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 10))


def _brute_kmeans(v: torch.Tensor, centroids: torch.Tensor, iterations: int) -> torch.Tensor:
    """Reference Lloyd steps with a dense distance matrix."""
    c = centroids.clone()
    for _ in range(iterations):
        labels = (v[:, None] - c[None, :]).abs().argmin(1)
        for j in range(c.numel()):
            if (labels == j).any():
                c[j] = v[labels == j].mean()
    return c


def test_kmeans_1d_matches_dense_lloyd():
    v = torch.randn(2000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c, labels = kmeans_1d(v, 8, iterations=300)
    ref = _brute_kmeans(v, torch.linspace(float(v.min()), float(v.max()), 8, dtype=torch.float64), 300)
    assert torch.allclose(c, ref.sort().values, atol=1e-9)
    assert torch.equal(labels, (v[:, None] - c[None, :]).abs().argmin(1))
    assert torch.all(c[1:] >= c[:-1])


def test_kmeans_1d_is_a_fixed_point_and_deterministic():
    v = torch.rand(500, generator=torch.Generator().manual_seed(3))
    for init in KMeansInit:
        c1, l1 = kmeans_1d(v, 4, init=init, generator=torch.Generator().manual_seed(5))
        c2, l2 = kmeans_1d(v, 4, init=init, generator=torch.Generator().manual_seed(5))
        assert torch.equal(c1, c2) and torch.equal(l1, l2)
        for j in range(4):  # converged: each centroid is the mean of its cluster
            if (l1 == j).any():
                assert float(c1[j]) == pytest.approx(float(v.double()[l1 == j].mean()), abs=1e-9)


def test_kmeans_1d_few_values_and_constant():
    c, labels = kmeans_1d(torch.tensor([1.0, 3.0]), 16)
    assert set(c[labels].tolist()) == {1.0, 3.0}
    c, labels = kmeans_1d(torch.full((5,), 0.25), 4)
    assert torch.all(c[labels] == 0.25)
    with pytest.raises(CompressionError, match="at least one"):
        kmeans_1d(torch.tensor([]), 2)
    with pytest.raises(CompressionError, match="finite"):
        kmeans_1d(torch.tensor([0.0, float("nan")]), 2)


def test_quantize_replaces_weights_by_codebook_entries():
    net = _net()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    books = kmeans_quantize(net, KMeansConfig(bits=3))
    assert list(books) == ["0", "4"]
    for name, book in books.items():
        layer = net.get_submodule(name)
        assert isinstance(book, Codebook) and has_codebook(layer) and codebook_of(layer) is book
        assert book.codebook.numel() == 8 and book.labels.dtype == torch.uint8
        assert torch.equal(layer.weight, book.codebook[book.labels.long()])
        assert layer.weight.unique().numel() <= 8
        original = layer.parametrizations.weight.original
        assert not original.requires_grad and torch.equal(original, before[f"{name}.weight"])
        err = (layer.weight - original).abs().max()
        assert err < (original.max() - original.min()) / 8  # within half a linear-init step or better
    assert not has_codebook(net[1])


def test_named_layers_only_and_errors():
    net = _net()
    books = kmeans_quantize(net, KMeansConfig(bits=2), layers="4")
    assert list(books) == ["4"] and not has_codebook(net[0])
    with pytest.raises(AlreadyQuantizedError, match="'4'"):
        kmeans_quantize(net, KMeansConfig(), layers=["0", "4"])
    assert not has_codebook(net[0])  # checked before anything changed
    with pytest.raises(LayerNotFoundError, match=r"'conv9'.*\['0', '4'\]"):
        kmeans_quantize(_net(), layers=["conv9"])
    with pytest.raises(UnsupportedLayerError, match="BatchNorm2d"):
        kmeans_quantize(_net(), layers=["1"])
    with pytest.raises(UnsupportedLayerError, match="no Conv or Linear"):
        kmeans_quantize(nn.Sequential(nn.ReLU()))
    with pytest.raises(CompressionError, match="empty"):
        kmeans_quantize(_net(), layers=[])
    masked = _net()
    attach_mask(masked[0], "weight")
    with pytest.raises(UnsupportedLayerError, match="Mask"):
        kmeans_quantize(masked)
    with pytest.raises(CompressionError, match="KMeansConfig"):
        kmeans_quantize(_net(), config={"bits": 4})
    with pytest.raises(CompressionError, match="not k-means"):
        codebook_of(nn.Linear(2, 2))


@pytest.mark.parametrize("bits", [0, 9, 2.0, True])
def test_bad_bits(bits):
    with pytest.raises(CompressionError, match="bits"):
        KMeansConfig(bits=bits)


def test_config_init_values():
    assert KMeansConfig(init="density").init is KMeansInit.DENSITY
    with pytest.raises(CompressionError, match="init"):
        KMeansConfig(init="__import__('os')")
    with pytest.raises(CompressionError, match="iterations"):
        KMeansConfig(iterations=0)


def test_centroid_gradient_is_sum_of_weight_gradients():
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    x = torch.randn(7, 6)
    book = kmeans_quantize(lin, KMeansConfig(bits=2))[""]
    dense = book.codebook[book.labels.long()].detach().requires_grad_(True)
    (F.linear(x, dense, lin.bias) ** 2).sum().backward()
    (lin(x) ** 2).sum().backward()
    manual = torch.zeros(4).index_add_(0, book.labels.long().reshape(-1), dense.grad.reshape(-1))
    assert torch.allclose(book.codebook.grad, manual, atol=1e-5)
    assert lin.parametrizations.weight.original.grad is None
    assert book.codebook.grad.abs().sum() > 0


def test_training_moves_centroids_labels_fixed():
    net = _net()
    books = kmeans_quantize(net, KMeansConfig(bits=2))
    labels = {n: b.labels.clone() for n, b in books.items()}
    start = {n: b.codebook.detach().clone() for n, b in books.items()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    for n, b in books.items():
        assert torch.equal(b.labels, labels[n]) and not torch.equal(b.codebook, start[n])
        assert net.get_submodule(n).weight.unique().numel() <= 4


def test_squash_bakes_codebook_and_keeps_outputs():
    net = _net().eval()
    kmeans_quantize(net, KMeansConfig(bits=4))
    x = torch.rand(3, 1, 8, 8)
    before = net(x)
    frozen_bias = net[4].bias.requires_grad_(False)
    out = kmeans_squash(net)
    assert out is net and not any(has_codebook(m) for m in net.modules())
    assert type(net[0].weight) is nn.Parameter and net[0].weight.requires_grad
    assert torch.allclose(net(x), before) and not frozen_bias.requires_grad
    assert net[0].weight.unique().numel() <= 16


def test_deepcopy_and_state_dict_roundtrip():
    net = _net()
    kmeans_quantize(net, KMeansConfig(bits=3))
    twin = copy.deepcopy(net)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(twin.eval()(x), net.eval()(x))
    other = _net(seed=1)
    kmeans_quantize(other, KMeansConfig(bits=3))
    other.load_state_dict(net.state_dict())
    assert torch.equal(other.eval()(x), net(x))
    kmeans_squash(twin)  # a deepcopy shares the parametrized class: squashing it must leave the original whole
    assert has_codebook(net[0]) and torch.equal(net(x), twin(x))


def test_storage_report_by_hand():
    net = _net()
    kmeans_quantize(net, KMeansConfig(bits=4))
    report = kmeans_storage(net)
    conv, fc = report.layers
    assert (conv.name, conv.weights, conv.bits, conv.centroids) == ("0", 36, 4, 16)
    assert conv.quantized_bits == 36 * 4 + 16 * 32
    assert fc.compression_ratio == pytest.approx(2560 * 32 / (2560 * 4 + 16 * 32))
    assert report.bits_per_weight == pytest.approx((2596 * 4 + 32 * 32) / 2596)
    other = (4 + 4 + 4 + 10) * 32  # conv bias, BN weight and bias, linear bias
    assert report.other_bits == other
    assert report.model_compression_ratio == pytest.approx((2596 * 32 + other) / (2596 * 4 + 32 * 32 + other))
    assert kmeans_storage(_net()).layers == ()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_agrees_with_cpu():
    cpu, gpu = _net(), _net().cuda()
    books = kmeans_quantize(cpu, KMeansConfig(bits=3))
    gpu_books = kmeans_quantize(gpu, KMeansConfig(bits=3))
    for name, book in books.items():
        other = gpu_books[name]
        assert other.codebook.is_cuda and other.labels.is_cuda
        assert torch.allclose(other.codebook.detach().cpu(), book.codebook.detach(), atol=1e-6)
        assert (other.labels.cpu() == book.labels).float().mean() > 0.99
    F.cross_entropy(gpu(torch.rand(4, 1, 8, 8, device="cuda")), torch.arange(4, device="cuda")).backward()
    assert gpu_books["0"].codebook.grad.is_cuda


# -- accuracy on the digits: 4-bit k-means + a short codebook fine-tune ------------------------------------

def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.tensor(bunch.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(range(len(y)), test_size=0.25, stratify=y.numpy(), random_state=0)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def _cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 32), nn.Flatten(),
                         nn.Linear(32 * 16, 10))


def _fit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int = 0) -> None:
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()


def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        return 100.0 * float((net(x).argmax(1) == y).float().mean())


@pytest.mark.slow
def test_four_bit_kmeans_finetuned_within_half_a_point_on_digits():
    x_train, y_train, x_test, y_test = _digits()
    net = _cnn()
    _fit(net, x_train, y_train, epochs=15, lr=3e-3)
    fp32 = _accuracy(net, x_test, y_test)
    assert fp32 > 95
    kmeans_quantize(net, KMeansConfig(bits=4))
    _fit(net, x_train, y_train, epochs=3, lr=1e-3, seed=1)  # codebooks, biases and BatchNorm
    tuned = _accuracy(net, x_test, y_test)
    assert tuned >= fp32 - 0.5
    assert kmeans_storage(net).compression_ratio > 7
    kmeans_squash(net)
    assert _accuracy(net, x_test, y_test) == tuned
