"""Tests of tinyqml.classical.qat: BN folding, weight/activation fake quantization, observers, STE."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from tinyqml.classical.errors import AlreadyQuantizedError, CalibrationError, CompressionError, \
    UnsupportedLayerError
from tinyqml.classical.kmeans import kmeans_quantize
from tinyqml.classical.linear_quant import INT8_ACTIVATION, INT8_WEIGHT, QuantSpec, dequantize, params_for, \
    quantize
from tinyqml.classical.qat import LINEAR_WEIGHT, ActivationFakeQuant, QATConfig, WeightFakeQuant, \
    is_qat_prepared, prepare_qat, qat_ranges, strip_qat
from tinyqml.search.masks import attach_mask


def _with_stats(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine parameters (so that folding is not trivial)."""
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return net


def _cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU6(), nn.Flatten(),
                        nn.Linear(6 * 4 * 4, 5))
    return _with_stats(net, seed)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        self.bn1d = nn.BatchNorm1d(3)
        _with_stats(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.stem(x))
        z = F.relu(y + self.bn(self.conv(y)))
        pooled = z.mean((2, 3))
        return torch.sigmoid(self.bn1d(self.fc(pooled)))


def _x(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _fq_args(gm: torch.fx.GraphModule) -> dict[str, str]:
    """Fake-quant point -> name of the fx node it reads."""
    return {gm.get_submodule(n.target).point: n.args[0].name for n in gm.graph.nodes
            if n.op == "call_module" and isinstance(gm.get_submodule(n.target), ActivationFakeQuant)}


def test_config_validation():
    assert QATConfig().weight == INT8_WEIGHT and QATConfig().linear_weight == LINEAR_WEIGHT
    with pytest.raises(CompressionError, match="ema"):
        QATConfig(ema=1.0)
    with pytest.raises(CompressionError, match="freeze_observers_after"):
        QATConfig(freeze_observers_after=-1)
    with pytest.raises(CompressionError, match="per tensor"):
        QATConfig(activation=INT8_WEIGHT)
    with pytest.raises(CompressionError, match="axis"):
        QATConfig(weight=QuantSpec(symmetric=True, per_channel=True, axis=1))
    with pytest.raises(CompressionError, match="QuantSpec"):
        QATConfig(weight="int8")
    with pytest.raises(CompressionError, match="fold_bn"):
        QATConfig(fold_bn=1)


def test_input_model_is_not_changed_and_mode_kept():
    net = _cnn().train()
    state = copy.deepcopy(net.state_dict())
    qat = prepare_qat(net, _x())
    assert qat.training and not is_qat_prepared(net) and is_qat_prepared(qat)
    assert not any(parametrize.is_parametrized(m) for m in net.modules())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    assert list(net.state_dict()) == list(state)
    assert not prepare_qat(net.eval(), _x()).training


def test_weights_on_int8_grid():
    qat = prepare_qat(_cnn(), _x())
    for name in ("0", "4"):
        conv = qat.get_submodule(name)
        assert isinstance(conv.parametrizations.weight[0], WeightFakeQuant)
        scale = params_for(conv.parametrizations.weight.original, INT8_WEIGHT).scale.reshape(-1, 1, 1, 1)
        q = conv.weight.detach() / scale
        assert torch.allclose(q, q.round(), atol=1e-3)
        assert q.abs().max() <= 127 + 1e-3
        assert torch.allclose(q.abs().amax((1, 2, 3)), torch.full((conv.out_channels,), 127.0))  # per channel
    fc = qat.get_submodule("8")
    q = fc.weight.detach() / params_for(fc.parametrizations.weight.original, LINEAR_WEIGHT).scale  # one scale
    assert torch.allclose(q, q.round(), atol=1e-3) and float(q.abs().max()) == pytest.approx(127)
    per_channel = prepare_qat(_cnn(), _x(), QATConfig(linear_weight=INT8_WEIGHT)).get_submodule("8")
    q = per_channel.weight.detach() / params_for(per_channel.weight, INT8_WEIGHT).scale[:, None]
    assert torch.allclose(q.abs().amax(1), torch.full((5,), 127.0), atol=1e-3)


def test_activation_fake_quant_is_dequantize_of_quantize():
    fq = ActivationFakeQuant(INT8_ACTIVATION)
    x = torch.randn(4000, generator=torch.Generator().manual_seed(2)) * 3 + 1
    fq.train()(x[:1000])  # first observation sets the range
    assert fq.range == (float(x[:1000].min()), float(x[:1000].max()))
    qp = fq.params()
    expected = dequantize(quantize(x, qp), qp)
    assert torch.allclose(fq.eval()(x), expected, atol=1e-6)
    assert torch.unique(fq(x)).numel() <= 256


def test_ste_passes_inside_and_blocks_clamped_values():
    fq = ActivationFakeQuant(INT8_ACTIVATION)
    fq.observe(torch.tensor([-1.0, 1.0]))
    x = torch.tensor([-3.0, -0.5, 0.0, 0.3, 0.99, 2.0], requires_grad=True)
    fq.eval()(x).backward(torch.arange(1.0, 7.0))
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 0.0]


def test_weight_gradient_reaches_the_float_weight():
    torch.manual_seed(0)
    qat = prepare_qat(nn.Sequential(nn.Linear(5, 3)), torch.randn(4, 5))
    layer = qat.get_submodule("0")
    x = torch.randn(6, 5)
    dense = layer.weight.detach().requires_grad_(True)
    (F.linear(x, dense, layer.bias) ** 2).sum().backward()
    (layer(x) ** 2).sum().backward()
    assert torch.allclose(layer.parametrizations.weight.original.grad, dense.grad, atol=1e-6)


def test_observers_update_in_train_and_freeze_in_eval():
    qat = prepare_qat(_cnn(), _x())
    start = qat_ranges(qat)
    assert start["input_1"] == (float(_x().min()), float(_x().max()))
    with torch.no_grad():
        qat.eval()(_x(seed=1) * 5)
    assert qat_ranges(qat) == start
    big = _x(seed=1) * 5
    with torch.no_grad():
        qat.train()(big)
    lo, hi = qat_ranges(qat)["input_1"]
    assert hi == pytest.approx(0.9 * start["input_1"][1] + 0.1 * float(big.max()), rel=1e-6)
    assert lo == pytest.approx(0.9 * start["input_1"][0] + 0.1 * float(big.min()), rel=1e-6, abs=1e-7)
    assert all(qat_ranges(qat)[k] != start[k] for k in ("_0", "_4"))


def test_observers_freeze_after_steps():
    qat = prepare_qat(_cnn(), _x(), QATConfig(freeze_observers_after=2, ema=0.5)).train()
    with torch.no_grad():
        for k in range(2):
            qat(_x(seed=k + 1) * (k + 2))
        after_two = qat_ranges(qat)
        qat(_x(seed=9) * 10)
    assert qat_ranges(qat) == after_two and after_two["input_1"][1] > 1.5
    fq = qat.qat_activations["fq_input_1"]
    assert fq.frozen and int(fq.steps) == 3


def test_folded_model_equals_bn_model_in_eval():
    for net in (_cnn(), _Residual()):
        x = _x(16, seed=3)
        qat = prepare_qat(net, x)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in qat.modules())
        plain = strip_qat(qat)
        with torch.no_grad():
            assert torch.allclose(plain.eval()(x), net.eval()(x), atol=1e-5)
            fake = qat.eval()(x)
            assert torch.allclose(fake, net(x), atol=0.05) and not torch.allclose(fake, net(x), atol=1e-7)


def test_quant_points_sequential():
    qat = prepare_qat(_cnn(), _x())
    # conv+BN+ReLU, conv+BN+ReLU6 and linear; the pool and flatten share their input's parameters
    assert _fq_args(qat) == {"input_1": "input_1", "_0": "_2", "_4": "_6", "_8": "_8"}
    assert list(qat_ranges(qat)) == ["input_1", "_0", "_4", "_8"]


def test_quant_points_residual_and_other_ops():
    qat = prepare_qat(_Residual(), _x())
    args = _fq_args(qat)
    # relu fused into the stem conv and into the add; BN folded into conv and fc; the mean shares
    assert args == {"x": "x", "stem": "relu", "conv": "conv", "add": "relu_1", "fc": "fc", "sigmoid": "sigmoid"}
    lo, hi = qat_ranges(qat)["add"]
    assert lo == 0.0 and hi > 0


def test_standalone_relu_gets_its_own_point():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(18, 2))
    assert _fq_args(prepare_qat(net, _x())) == {"input_1": "input_1", "_0": "_0", "_2": "_2", "_4": "_4"}


def test_fold_bn_false_keeps_batchnorm():
    net = _cnn()
    qat = prepare_qat(net, _x(), QATConfig(fold_bn=False))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in qat.modules()) == 2
    assert _fq_args(qat) == {"input_1": "input_1", "_0": "_2", "_4": "_6", "_8": "_8"}
    plain = strip_qat(qat)
    assert torch.allclose(plain.eval()(_x()), net.eval()(_x()), atol=1e-6)
    bn_first = nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 2, 3))
    assert "_0" in qat_ranges(prepare_qat(bn_first, _x(), QATConfig(fold_bn=False)))


def test_strip_gives_a_plain_retraceable_float_model():
    qat = prepare_qat(_cnn(), _x())
    plain = strip_qat(qat)
    assert not is_qat_prepared(plain) and is_qat_prepared(qat)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert all(type(p) is nn.Parameter and p.requires_grad for p in plain.parameters())
    assert torch.equal(plain.get_submodule("0").weight, qat.get_submodule("0").parametrizations.weight.original)
    retraced = torch.fx.symbolic_trace(plain)
    assert torch.equal(retraced.eval()(_x()), plain.eval()(_x()))
    twin = copy.deepcopy(qat)
    assert torch.equal(twin.eval()(_x()), qat.eval()(_x())) and qat_ranges(twin) == qat_ranges(qat)


class _Casting(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().to(torch.float32) * 2


def test_points_named_like_module_methods():
    assert list(qat_ranges(prepare_qat(_Casting(), torch.randn(2, 4)))) == ["x", "float_1", "to", "mul"]


class _Normed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc(x))


class _LooseParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else -x


def test_bad_models_and_inputs_raise_named_errors():
    qat = prepare_qat(_cnn(), _x())
    with pytest.raises(AlreadyQuantizedError, match="already prepared"):
        prepare_qat(qat, _x())
    with pytest.raises(UnsupportedLayerError, match=r"'norm' \(LayerNorm\)"):
        prepare_qat(_Normed(), torch.randn(2, 4))
    with pytest.raises(UnsupportedLayerError, match="'scale'"):
        prepare_qat(_LooseParameter(), torch.randn(2, 4))
    with pytest.raises(UnsupportedLayerError, match="cannot trace _Branchy"):
        prepare_qat(_Branchy(), torch.randn(2, 4))
    with pytest.raises(UnsupportedLayerError, match="BatchNorm '0'.*fold_bn=False"):
        prepare_qat(nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 2, 3)), _x())
    shared = nn.Conv2d(1, 1, 3, padding=1)
    with pytest.raises(UnsupportedLayerError, match="BatchNorm '1'"):
        prepare_qat(nn.Sequential(shared, nn.BatchNorm2d(1), shared), _x())
    with pytest.raises(UnsupportedLayerError, match="ConvTranspose2d"):
        prepare_qat(nn.Sequential(nn.ConvTranspose2d(1, 2, 3)), _x())
    kmeans = _cnn()
    kmeans_quantize(kmeans)
    with pytest.raises(AlreadyQuantizedError, match="k-means"):
        prepare_qat(kmeans, _x())
    masked = _cnn()
    attach_mask(masked[0], "weight")
    with pytest.raises(UnsupportedLayerError, match="Mask"):
        prepare_qat(masked, _x())
    with pytest.raises(CalibrationError, match="does not run"):
        prepare_qat(_cnn(), torch.rand(2, 3, 8, 8))
    with pytest.raises(CalibrationError, match="non-empty"):
        prepare_qat(_cnn(), torch.rand(0, 1, 8, 8))
    with pytest.raises(CalibrationError, match="tensor"):
        prepare_qat(_cnn(), [[0.0]])
    with pytest.raises(CompressionError, match="nn.Module"):
        prepare_qat("net", _x())
    with pytest.raises(CompressionError, match="QATConfig"):
        prepare_qat(_cnn(), _x(), config=INT8_WEIGHT)
    with pytest.raises(CompressionError, match="not prepared"):
        strip_qat(_cnn())
    with pytest.raises(CompressionError, match="not prepared"):
        qat_ranges(_cnn())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_agrees_with_cpu():
    x = _x(16)
    cpu = prepare_qat(_Residual(), x).eval()
    gpu = prepare_qat(_Residual().cuda(), x.cuda()).eval()
    assert all(b.is_cuda for b in gpu.buffers()) and all(p.is_cuda for p in gpu.parameters())
    with torch.no_grad():
        # equal up to a rounding that a last-bit difference moves by one step (1/255 of the output range)
        assert torch.allclose(gpu(x.cuda()).cpu(), cpu(x), atol=0.02)
    gpu.train()(x.cuda()).sum().backward()
    assert gpu.get_submodule("stem").parametrizations.weight.original.grad.is_cuda
    assert torch.allclose(strip_qat(gpu).eval()(x.cuda()).cpu(), strip_qat(cpu).eval()(x), atol=1e-4)


# -- digits: QAT fine-tuning keeps the accuracy --------------------------------------------------------------

def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.tensor(bunch.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(range(len(y)), test_size=0.25, stratify=y.numpy(), random_state=0)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def _digit_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(*block(1, 8), nn.MaxPool2d(2), *block(8, 16), *block(16, 16), nn.Flatten(),
                         nn.Linear(16 * 16, 10))


def _fit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int = 0) -> nn.Module:
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * float((net.eval()(x).argmax(1) == y).float().mean())


def test_qat_finetune_keeps_accuracy_on_digits():
    x_train, y_train, x_test, y_test = _digits()
    net = _fit(_digit_cnn(), x_train, y_train, epochs=8, lr=3e-3)
    fp32 = _accuracy(net, x_test, y_test)
    assert fp32 > 95
    qat = prepare_qat(net, x_train[:512])
    _fit(qat, x_train, y_train, epochs=2, lr=5e-4, seed=1)
    assert _accuracy(qat, x_test, y_test) >= fp32 - 1.0
    assert _accuracy(strip_qat(qat), x_test, y_test) >= fp32 - 1.0


@pytest.mark.slow
def test_low_bit_qat_recovers_what_post_training_fake_quant_loses():
    x_train, y_train, x_test, y_test = _digits()
    net = _fit(_digit_cnn(), x_train, y_train, epochs=8, lr=3e-3)
    three = QATConfig(weight=QuantSpec(bits=3, symmetric=True, per_channel=True, narrow=True),
                      linear_weight=QuantSpec(bits=3, symmetric=True, narrow=True), activation=QuantSpec(bits=3))
    ptq = _accuracy(prepare_qat(net, x_train, three), x_test, y_test)  # observers from the whole training set
    qat = _fit(prepare_qat(net, x_train[:512], three), x_train, y_train, epochs=4, lr=1e-3, seed=1)
    assert _accuracy(qat, x_test, y_test) >= ptq + 1.5  # measured: 92.0 -> 94.9 (seeds 1, 2: +3.8, +4.0)
