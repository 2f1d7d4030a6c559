import numpy as np
import pytest
import torch
from torch import nn

from optimum_spd.pruning.masks import PruningMasks, num_to_prune, pack_bits, unpack_bits


@pytest.mark.parametrize(
    "shape, sparsity, kept",
    [((768, 768), 0.9, 58_982), ((3072, 768), 0.9, 235_929), ((768, 3072), 0.9, 235_929), ((10, 10), 0.9, 10)],
)
def test_keep_counts_match_reference(shape, sparsity, kept):
    numel = shape[0] * shape[1]
    assert numel - num_to_prune(numel, sparsity) == kept
    weight = nn.Parameter(torch.randn(shape))
    masks = PruningMasks({"w": weight})
    masks.update(sparsity)
    assert int(masks.keep["w"].sum()) == kept
    assert int((weight != 0).sum()) == kept


def test_kept_weights_are_the_largest():
    torch.manual_seed(0)
    original = torch.randn(64, 48)
    weight = nn.Parameter(original.clone())
    masks = PruningMasks({"w": weight})
    masks.update(0.75)
    keep = masks.keep["w"]
    assert original.abs()[keep].min() >= original.abs()[~keep].max()


def test_masks_are_monotone_even_if_pruned_weights_regrow():
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(32, 32))
    masks = PruningMasks({"w": weight})
    previous = masks.keep["w"].clone()
    for sparsity in (0.2, 0.5, 0.7, 0.9):
        with torch.no_grad():
            weight.add_(torch.randn_like(weight) * 10)  # pruned positions become large: they still must not return
        masks.update(sparsity)
        current = masks.keep["w"]
        assert not (current & ~previous).any()
        assert int(current.sum()) == 1024 - num_to_prune(1024, sparsity)
        previous = current.clone()
    with pytest.raises(ValueError, match="monotone"):
        masks.update(0.5)


def test_gradient_and_optimizer_state_masking():
    weight = nn.Parameter(torch.randn(8, 8))
    masks = PruningMasks({"w": weight})
    optimizer = torch.optim.AdamW([weight], lr=0.1, weight_decay=0.1)
    weight.sum().backward()
    optimizer.step()
    masks.update(0.5)
    masks.apply_to_optimizer_state(optimizer)
    state = optimizer.state[weight]
    assert (state["exp_avg"][~masks.keep["w"]] == 0).all() and (state["exp_avg_sq"][~masks.keep["w"]] == 0).all()
    weight.grad = torch.ones_like(weight)
    masks.apply_to_gradients()
    assert (weight.grad[~masks.keep["w"]] == 0).all() and (weight.grad[masks.keep["w"]] == 1).all()


def test_violations_detects_nonzero_pruned_weight():
    weight = nn.Parameter(torch.randn(4, 4))
    masks = PruningMasks({"w": weight})
    masks.update(0.5)
    assert masks.violations() == {}
    index = (~masks.keep["w"]).nonzero()[0]
    with torch.no_grad():
        weight[index[0], index[1]] = 1e-30
    assert masks.violations() == {"w": 1}


@pytest.mark.parametrize("shape", [(3, 8), (5, 13), (2, 3, 17), (1, 1)])
def test_pack_bits_matches_numpy_little_endian(shape):
    bits = torch.rand(shape) > 0.5
    packed = pack_bits(bits)
    expected = np.packbits(bits.numpy(), axis=-1, bitorder="little")
    assert np.array_equal(packed.numpy(), expected)
    assert torch.equal(unpack_bits(packed, shape[-1]), bits)


def test_state_dict_round_trip_and_mismatch():
    weights = {"a": nn.Parameter(torch.randn(6, 10)), "b": nn.Parameter(torch.randn(3, 3))}
    masks = PruningMasks(weights)
    masks.update(0.6)
    state = masks.state_dict()
    assert state["a.keep_bits"].dtype == torch.uint8 and state["a.keep_bits"].shape == (6, 2)
    restored = PruningMasks({name: nn.Parameter(torch.randn_like(p)) for name, p in weights.items()})
    restored.load_state_dict(state)
    assert restored.sparsity == pytest.approx(0.6)
    assert all(torch.equal(restored.keep[name], masks.keep[name]) for name in weights)
    with pytest.raises(ValueError, match="do not match the pruned weights"):
        PruningMasks({"c": nn.Parameter(torch.randn(2, 2))}).load_state_dict(state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run the suite on a GPU machine)")
def test_masks_follow_their_weights_when_the_model_moves_to_cuda():
    # Trainer builds nothing on the GPU before train(): the masks are made on the CPU, then the model moves.
    layer = nn.Linear(16, 16)
    masks = PruningMasks({"weight": layer.weight})
    masks.update(0.5)
    layer.to("cuda")
    layer.weight.grad = torch.ones_like(layer.weight)
    layer.weight.data.fill_(1.0)
    masks.apply_to_gradients()
    masks.apply_to_weights()
    masks.update(0.75)
    assert masks.keep["weight"].device == layer.weight.device
    assert masks.violations() == {}
    assert int((layer.weight == 0).sum()) == num_to_prune(256, 0.75)
    assert int((layer.weight.grad == 0).sum()) == num_to_prune(256, 0.5)
