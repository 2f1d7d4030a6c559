import copy

import pytest
import torch
from helpers import tiny_model
from test_serialization import pruned_model
from torch import nn

from optimum_spd import NativeCSRLinear, sparse_kernel, sparsity_report, to_sparse_inference


def pruned_linear(in_features: int, out_features: int, sparsity: float = 0.9, bias: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        linear.weight[torch.rand_like(linear.weight) < sparsity] = 0
        linear.weight[3] = 0  # an empty row
    return linear


# Token counts around the kernel's 16-token vectors and its 64-token blocks: padding, remainders, both paths.
@pytest.mark.parametrize("tokens", [1, 15, 16, 17, 64, 70, 130])
@pytest.mark.parametrize("bias", [True, False])
def test_native_kernel_matches_the_dense_linear(tokens, bias):
    linear = pruned_linear(48, 37, bias=bias)  # 37 rows: a partial group of 16 output rows
    sparse = NativeCSRLinear(linear)
    hidden = torch.randn(tokens, 48)
    with torch.no_grad():
        expected = linear(hidden)
        actual = sparse(hidden)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_native_kernel_keeps_leading_dimensions_and_the_linear_state_dict():
    linear = pruned_linear(32, 40)
    sparse = NativeCSRLinear(linear)
    hidden = torch.randn(3, 5, 32)
    with torch.inference_mode():
        torch.testing.assert_close(sparse(hidden), linear(hidden), atol=1e-5, rtol=1e-5)
    assert sparse.state_dict().keys() == linear.state_dict().keys()
    torch.testing.assert_close(sparse.state_dict()["weight"], linear.weight.detach())
    assert sparse.sparsity == pytest.approx(float((linear.weight == 0).float().mean()))


def test_native_int8_values_are_per_row_quantised():
    linear = pruned_linear(64, 24)
    sparse = NativeCSRLinear(linear, int8=True)
    assert sparse.values.dtype == torch.int8 and sparse.col.dtype == torch.uint16
    # Rounding to the nearest of 255 levels per row: each weight is off by at most half a step of its row's scale.
    step = linear.weight.detach().abs().amax(dim=1, keepdim=True) / 127
    error = (sparse.dense_weight() - linear.weight.detach()).abs()
    assert bool((error <= step / 2 + 1e-7).all())
    assert bool((sparse.dense_weight()[linear.weight == 0] == 0).all())  # the pattern is kept: zeros stay zero
    hidden = torch.randn(20, 64)
    with torch.no_grad():
        reference = hidden @ sparse.dense_weight().t() + linear.bias
        torch.testing.assert_close(sparse(hidden), reference, atol=1e-5, rtol=1e-5)


def test_native_kernel_on_a_whole_model():
    model = pruned_model(sparsity=0.8)
    sparse_model = copy.deepcopy(model)
    replaced = to_sparse_inference(sparse_model, min_sparsity=0.5, kernel="native")
    assert len(replaced) == 12 and all(isinstance(sparse_model.get_submodule(n), NativeCSRLinear) for n in replaced)
    ids = torch.randint(5, 100, (3, 21))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    with torch.inference_mode():
        torch.testing.assert_close(
            sparse_model(input_ids=ids, attention_mask=mask).logits,
            model(input_ids=ids, attention_mask=mask).logits,
            atol=1e-5,
            rtol=1e-5,
        )
    targets = [f"{name}.weight" for name in replaced]
    report = sparsity_report(sparse_model, targets=targets)  # reads the weights back out of the kernel's CSR
    assert report.prunable_sparsity == pytest.approx(sparsity_report(model, targets=targets).prunable_sparsity)
    assert sparse_model.state_dict().keys() == model.state_dict().keys()


def test_a_native_model_compiles_as_one_graph():
    # fullgraph=True fails on any graph break: the kernel must be one opaque op that torch.compile traces through.
    # aot_eager runs the captured graph without inductor's C++ build, so the test stays fast.
    torch.manual_seed(0)
    model = pruned_model(sparsity=0.8)
    sparse_model = copy.deepcopy(model)
    to_sparse_inference(sparse_model, min_sparsity=0.5, kernel="native", int8=True)
    torch._dynamo.reset()
    compiled = torch.compile(sparse_model, backend="aot_eager", fullgraph=True)
    ids = torch.randint(5, 100, (2, 19))
    with torch.inference_mode():
        expected = sparse_model(input_ids=ids).logits
        torch.testing.assert_close(compiled(input_ids=ids).logits, expected, atol=1e-6, rtol=1e-6)
        assert (expected - model(input_ids=ids).logits).abs().max() < 1e-2  # int8 weights: close, not exact


def test_native_kernel_refuses_what_it_cannot_run():
    sparse = NativeCSRLinear(pruned_linear(16, 8))
    with pytest.raises(TypeError, match="fp32 activations on the CPU"):
        sparse(torch.randn(2, 16, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="inference"):
        sparse(torch.randn(2, 16, requires_grad=True))
    with pytest.raises(ValueError, match="kernel='native'"):
        to_sparse_inference(tiny_model(), kernel="torch", int8=True)
    with pytest.raises(ValueError, match="choose one of"):
        to_sparse_inference(tiny_model(), kernel="mkl")


def test_kernel_build_is_cached_and_a_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    first = sparse_kernel.build_kernel(tmp_path)
    assert first.parent == tmp_path and first.is_file()
    modified = first.stat().st_mtime_ns
    assert sparse_kernel.build_kernel(tmp_path) == first and first.stat().st_mtime_ns == modified  # not rebuilt
    assert list(tmp_path.iterdir()) == [first]  # no scratch left behind

    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(sparse_kernel.shutil, "which", lambda name: None)
    with pytest.raises(sparse_kernel.KernelUnavailableError, match="needs a C compiler.*kernel='torch'"):
        sparse_kernel.build_kernel(tmp_path / "elsewhere")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.raises(sparse_kernel.KernelUnavailableError, match="no-such-compiler"):
        sparse_kernel.build_kernel(tmp_path / "elsewhere")
