"""Tests of dcformat.training: masks that stay pruned, trained centroids, schedules, export,
DistributedDataParallel and bfloat16 autocast."""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import dcformat  # noqa: E402
from dcformat import prune  # noqa: E402
from dcformat.errors import ConfigError  # noqa: E402
from dcformat.training import (  # noqa: E402
    Mask,
    PolynomialSchedule,
    SharedWeight,
    StepSchedule,
    codebooks,
    export_model,
    masks,
    prune_model,
    share_model_weights,
)

WEIGHTS = ("conv.weight", "fc.weight")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The models are tiny; a second intra-op thread only adds contention on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Net(torch.nn.Module):
    """A convolution and a linear layer: the two kinds of weight Deep Compression prunes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 6, 3)
        self.fc = torch.nn.Linear(6 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def make_batch(seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 2, 8, 8, generator=generator), torch.randint(0, 5, (size,), generator=generator)


def train(model, optimizer, steps: int, seed: int = 0) -> None:
    for step in range(steps):
        x, y = make_batch(seed + step)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def effective(model, name: str) -> torch.Tensor:
    owner, attr = name.rsplit(".", 1)
    with torch.no_grad():
        return getattr(model.get_submodule(owner), attr).detach().clone()


def numpy_weights(model) -> dict[str, np.ndarray]:
    return {name: effective(model, name).numpy() for name in WEIGHTS}


# --------------------------------------------------------------------------------------
# Masks


@pytest.mark.parametrize("make_optimizer", [
    lambda params: torch.optim.SGD(params, lr=0.5, momentum=0.9, nesterov=True, weight_decay=0.05),
    lambda params: torch.optim.AdamW(params, lr=0.05, weight_decay=0.1),
], ids=["sgd-momentum", "adamw"])
def test_pruned_weight_stays_zero(make_optimizer):
    model = make_net()
    optimizer = make_optimizer(model.parameters())
    train(model, optimizer, 3)  # momentum and Adam moments are non-zero before pruning
    parameter = model.fc.weight
    prune_model(model, sparsity=0.7)
    kept = masks(model)
    # The mask moves the Parameter object itself under parametrizations, so the existing
    # optimiser and its state keep working.
    assert model.fc.parametrizations.weight.original is parameter

    train(model, optimizer, 20, seed=100)

    for name in WEIGHTS:
        weight = effective(model, name)
        assert torch.equal(masks(model)[name], kept[name])
        assert torch.all(weight[~kept[name]] == 0)
        assert not torch.any(torch.signbit(weight[~kept[name]]))  # +0.0, not -0.0
        assert torch.count_nonzero(weight[kept[name]]) == kept[name].sum()


def test_pruned_weight_gets_zero_gradient():
    model = make_net()
    prune_model(model, sparsity=0.5)
    x, y = make_batch(0)
    torch.nn.functional.cross_entropy(model(x), y).backward()

    original = model.fc.parametrizations.weight.original
    assert torch.all(original.grad[~masks(model)["fc.weight"]] == 0)
    assert torch.any(original.grad[masks(model)["fc.weight"]] != 0)


@pytest.mark.parametrize("rule", [{"sparsity": 0.6}, {"quality": 0.8}])
@pytest.mark.parametrize("scope", ["tensor", "global"])
def test_masks_match_prune_module(rule, scope):
    model = make_net()
    weights = numpy_weights(model)

    result = prune_model(model, scope=scope, **rule)
    expected = prune.prune(weights, scope=scope, **rule)

    for name in WEIGHTS:
        np.testing.assert_array_equal(masks(model)[name].numpy(), expected.masks[name])
        assert result.sparsity[name] == expected.sparsity[name]
        assert result.thresholds[name] == expected.thresholds[name]


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 12), columns=st.integers(1, 12), sparsity=st.floats(0.0, 0.99),
       seed=st.integers(0, 2**16), repeated=st.booleans())
def test_masks_match_magnitude_mask_property(rows, columns, sparsity, seed, repeated):
    layer = torch.nn.Linear(columns, rows)
    with torch.no_grad():
        values = torch.randn(rows, columns, generator=torch.Generator().manual_seed(seed))
        if repeated:
            values = values.round()  # many equal magnitudes, so ties decide the mask
        layer.weight.copy_(values)
    weights = layer.weight.detach().numpy().copy()

    prune_model(layer, sparsity=sparsity)

    np.testing.assert_array_equal(masks(layer)["weight"].numpy(),
                                  prune.magnitude_mask(weights, sparsity=sparsity))


@settings(max_examples=50, deadline=None)
@given(begin=st.integers(0, 20), length=st.integers(0, 30), frequency=st.integers(1, 7),
       initial=st.floats(0.0, 0.5), final=st.floats(0.5, 0.99))
def test_polynomial_schedule_rises_to_final(begin, length, frequency, initial, final):
    schedule = PolynomialSchedule(final=final, end=begin + length, begin=begin, frequency=frequency,
                                  initial=initial)
    amounts = [schedule.amount_at(step) for step in schedule.pruning_steps]

    assert schedule.pruning_steps[0] == begin
    assert schedule.pruning_steps[-1] == begin + length
    assert amounts[-1] == final
    assert all(b >= a - 1e-12 for a, b in zip(amounts, amounts[1:]))
    assert all(initial - 1e-12 <= amount <= final + 1e-12 for amount in amounts)


def test_per_tensor_amounts_match_magnitude_mask():
    model = make_net()
    weights = numpy_weights(model)
    amounts = {"conv.weight": 0.3, "fc.weight": 0.9}

    prune_model(model, sparsity=amounts)

    assert set(masks(model)) == set(amounts)
    for name, amount in amounts.items():
        np.testing.assert_array_equal(masks(model)[name].numpy(),
                                      prune.magnitude_mask(weights[name], sparsity=amount))


def test_prune_include_selects_tensors():
    model = make_net()
    prune_model(model, sparsity=0.5, include="fc.*", exclude="*.bias")

    assert set(masks(model)) == {"fc.weight"}
    assert not torch.nn.utils.parametrize.is_parametrized(model.conv)


def test_repeated_quality_pruning_is_monotone():
    # The std rule counts pruned zeros, so each round at the same quality prunes more.
    model = make_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    previous = None
    for round_index in range(3):
        prune_model(model, quality=1.0)
        current = masks(model)
        if previous is not None:
            for name in WEIGHTS:
                assert not torch.any(current[name] & ~previous[name])  # nothing regrows
        previous = current
        train(model, optimizer, 3, seed=10 * round_index)


def test_state_dict_round_trip_with_masks():
    model = make_net()
    prune_model(model, sparsity=0.6)
    copy = make_net(seed=1)
    prune_model(copy, sparsity=0.0)  # the same parametrizations, so the keys match

    copy.load_state_dict(model.state_dict())

    for name in WEIGHTS:
        assert torch.equal(effective(copy, name), effective(model, name))
        assert torch.equal(masks(copy)[name], masks(model)[name])


@pytest.mark.parametrize("kwargs, error", [
    ({"sparsity": 0.5, "quality": 1.0}, ConfigError),
    ({}, ConfigError),
    ({"sparsity": 1.0}, ConfigError),
    ({"sparsity": {"missing.weight": 0.5}}, ConfigError),
    ({"sparsity": {"fc.weight": 0.5}, "scope": "global"}, ConfigError),
    ({"sparsity": {"fc.weight": 0.5}, "include": "fc.*"}, ConfigError),
    ({"sparsity": "0.5"}, TypeError),
])
def test_prune_model_rejects_bad_settings(kwargs, error):
    with pytest.raises(error):
        prune_model(make_net(), **kwargs)


def test_prune_model_rejects_non_module():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        prune_model({"fc.weight": torch.ones(2, 2)}, sparsity=0.5)


def test_mask_forward_ignores_nonfinite_pruned_values():
    mask = Mask(torch.tensor([True, False, False]))
    out = mask(torch.tensor([1.0, float("inf"), -2.0]))
    assert out.tolist() == [1.0, 0.0, 0.0]
    assert not torch.signbit(out[2])


# --------------------------------------------------------------------------------------
# Schedules


def test_polynomial_schedule_is_cubic():
    schedule = PolynomialSchedule(final=0.9, end=10, begin=2, frequency=3)

    assert schedule.pruning_steps == (2, 5, 8, 10)
    assert schedule.amount_at(2) == 0.0
    assert schedule.amount_at(10) == pytest.approx(0.9)
    assert schedule.amount_at(5) == pytest.approx(0.9 * (1 - (1 - 3 / 8) ** 3))
    assert schedule.amount_at(3) is None
    assert schedule.amount_at(11) is None
    assert schedule.as_dict()["kind"] == "polynomial"


def test_polynomial_schedule_per_tensor():
    schedule = PolynomialSchedule(final={"conv.weight": 0.5, "fc.weight": 0.9}, end=4,
                                  initial={"conv.weight": 0.1, "fc.weight": 0.2})
    assert schedule.amount_at(0) == {"conv.weight": 0.1, "fc.weight": 0.2}
    assert schedule.amount_at(4) == pytest.approx({"conv.weight": 0.5, "fc.weight": 0.9})


def test_schedule_drives_pruning():
    model = make_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    schedule = PolynomialSchedule(final=0.8, end=6, frequency=2)
    prune_model(model, sparsity=0.0)
    for step in range(8):
        result = schedule.apply(model, step)
        assert (result is None) == (step not in schedule.pruning_steps)
        if result is not None:
            for name in WEIGHTS:
                assert result.sparsity[name] == pytest.approx(schedule.amount_at(step), abs=0.01)
        train(model, optimizer, 1, seed=step)

    for name in WEIGHTS:
        assert 1 - masks(model)[name].float().mean().item() == pytest.approx(0.8, abs=0.01)


def test_step_schedule():
    schedule = StepSchedule((0.5, 0.7, 0.9), steps=(0, 4, 8))
    assert [schedule.amount_at(step) for step in (0, 1, 4, 8, 9)] == [0.5, None, 0.7, 0.9, None]
    quality = StepSchedule((0.5, 1.0), criterion="quality")
    model = make_net()
    weights = numpy_weights(model)
    quality.apply(model, 0)
    np.testing.assert_array_equal(masks(model)["fc.weight"].numpy(),
                                  prune.magnitude_mask(weights["fc.weight"], quality=0.5))


@pytest.mark.parametrize("make", [
    lambda: StepSchedule((0.5, 1.2)),
    lambda: StepSchedule((0.5, 0.7), steps=(3, 3)),
    lambda: StepSchedule((0.5, 0.7), steps=(1,)),
    lambda: StepSchedule(()),
    lambda: StepSchedule((0.5,), criterion="l1"),
    lambda: StepSchedule((-1.0,), criterion="quality"),
    lambda: PolynomialSchedule(final=0.9, end=2, begin=5),
    lambda: PolynomialSchedule(final=0.9, end=5, frequency=0),
    lambda: PolynomialSchedule(final=0.9, end=5, initial={"fc.weight": 0.1}),
])
def test_schedule_rejects_bad_settings(make):
    with pytest.raises(ConfigError):
        make()


def test_schedule_rejects_bad_types():
    with pytest.raises(TypeError):
        StepSchedule(0.5)
    with pytest.raises(TypeError):
        PolynomialSchedule(final=0.9, end=2.5)


# --------------------------------------------------------------------------------------
# Shared weights


def test_centroid_gradient_is_sum_of_member_gradients():
    model = make_net()
    prune_model(model, sparsity=0.5)
    shared = share_model_weights(model, 3)
    x, y = make_batch(0)

    # The same forward with plain tensors, to get each weight's own gradient.
    dense = {name: effective(model, name).requires_grad_() for name in WEIGHTS}
    hidden = torch.relu(torch.nn.functional.conv2d(x, dense["conv.weight"], model.conv.bias)).flatten(1)
    logits = torch.nn.functional.linear(hidden, dense["fc.weight"], model.fc.bias)
    torch.nn.functional.cross_entropy(logits, y).backward()
    torch.nn.functional.cross_entropy(model(x), y).backward()

    for name in WEIGHTS:
        parametrization = shared[name]
        assert parametrization.zero_slot == 0
        assignments = parametrization.assignments.reshape(-1)
        sums = torch.zeros(parametrization.codebook.numel()).index_add_(
            0, assignments, dense[name].grad.reshape(-1))
        torch.testing.assert_close(parametrization.centroids.grad, sums[1:], rtol=1e-5, atol=1e-7)


def test_optimizer_trains_codebook_not_assignments():
    model = make_net()
    prune_model(model, sparsity=0.6)
    kept = masks(model)
    shared = share_model_weights(model, 4)
    assignments = {name: p.assignments.clone() for name, p in shared.items()}
    before = codebooks(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01,
                                momentum=0.9, weight_decay=0.01)

    train(model, optimizer, 10)

    after = codebooks(model)
    for name in WEIGHTS:
        assert torch.equal(shared[name].assignments, assignments[name])
        assert after[name][0] == 0
        assert not torch.equal(after[name], before[name])
        assert torch.equal(masks(model)[name], kept[name])
        weight = effective(model, name)
        assert torch.all(weight[~kept[name]] == 0)
        assert torch.equal(weight, after[name][assignments[name]])


def test_initial_codebook_is_share_weights():
    model = make_net()
    prune_model(model, sparsity=0.5)
    weights = numpy_weights(model)

    shared = share_model_weights(model, {"fc.weight": 4})

    expected = dcformat.quantize.share_weights(weights["fc.weight"], 4, init="linear")
    np.testing.assert_array_equal(shared["fc.weight"].codebook.detach().numpy(), expected.codebook)
    np.testing.assert_array_equal(shared["fc.weight"].assignments.numpy(), expected.assignments)
    assert set(codebooks(model)) == {"fc.weight"}


@pytest.mark.parametrize("layer, shape", [
    (lambda: torch.nn.Conv1d(3, 4, 3), (2, 3, 9)),
    (lambda: torch.nn.Conv2d(3, 4, 3), (2, 3, 6, 6)),
    (lambda: torch.nn.Conv3d(3, 4, 3), (2, 3, 5, 5, 5)),
    (lambda: torch.nn.Linear(7, 4), (2, 7)),
], ids=["conv1d", "conv2d", "conv3d", "linear"])
def test_sharing_works_for_layer_kinds_and_biases(layer, shape):
    torch.manual_seed(0)
    module = torch.nn.Sequential(layer())
    prune_model(module, sparsity=0.5)
    share_model_weights(module, {"0.weight": 2, "0.bias": 2})  # a bias by name, no zeros in it
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)

    before = codebooks(module)
    module(torch.randn(shape)).square().mean().backward()
    optimizer.step()

    after = codebooks(module)
    assert module[0].parametrizations.bias[0].zero_slot is None
    assert after["0.bias"].numel() <= 4
    for name in ("0.weight", "0.bias"):
        assert not torch.equal(before[name], after[name])
    buffer = io.BytesIO()
    export_model(module, buffer)
    decoded = dcformat.load(buffer.getvalue())
    for name in ("0.weight", "0.bias"):
        np.testing.assert_array_equal(decoded[name], effective(module, name).numpy())


def test_share_rejects_unknown_name_and_pruning_after_sharing():
    model = make_net()
    with pytest.raises(ConfigError):
        share_model_weights(model, {"nope.weight": 4})
    share_model_weights(model, 4)
    with pytest.raises(ConfigError, match="already shared"):
        prune_model(model, sparsity={"fc.weight": 0.5})


def test_shared_weight_rejects_bad_assignments():
    with pytest.raises(ConfigError):
        SharedWeight(torch.tensor([0.0, 1.0]), torch.tensor([0, 2]), 0, 1)
    with pytest.raises(ConfigError):
        SharedWeight(torch.tensor([0.5, 1.0]), torch.tensor([0, 1]), 0, 1)  # zero slot not 0.0
    with pytest.raises(ConfigError):
        SharedWeight(torch.zeros(5), torch.tensor([0, 1]), None, 2)
    with pytest.raises(TypeError):
        SharedWeight(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]), 0, 1)


# --------------------------------------------------------------------------------------
# Export


def trained_model() -> Net:
    model = make_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    prune_model(model, sparsity={"conv.weight": 0.3, "fc.weight": 0.8})
    train(model, optimizer, 5)
    share_model_weights(model, {"conv.weight": 5, "fc.weight": 3})
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    train(model, optimizer, 5, seed=50)
    return model


def test_export_then_load_gives_trained_weights_exactly():
    model = trained_model()
    buffer = io.BytesIO()

    report = export_model(model, buffer, metadata={"training": {"epochs": 5}})

    decoded = dcformat.load(buffer.getvalue())
    assert list(decoded) == [t.name for t in report.tensors]
    assert set(decoded) == {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}
    for name, value in decoded.items():
        expected = effective(model, name).numpy()
        assert value.dtype == expected.dtype
        assert value.tobytes() == expected.tobytes()  # bit-exact, signs of zeros included
    by_name = {t.name: t for t in report.tensors}
    assert by_name["fc.weight"].encoding in ("sparse-shared", "shared")
    assert by_name["fc.bias"].encoding == "raw"
    assert report.file_bytes == len(buffer.getvalue())
    with dcformat.open(buffer.getvalue()) as reader:
        assert reader.metadata()["user"] == {"training": {"epochs": 5}}
        assert reader.verify().ok


def test_export_picks_smallest_index_bits():
    model = trained_model()
    sizes = {}
    for width in range(2, 9):
        report = export_model(model, io.BytesIO(), index_bits=(width,))
        fc = next(t for t in report.tensors if t.name == "fc.weight")
        if fc.encoding == "sparse-shared":
            sizes[width] = fc.stored_bytes

    report = export_model(model, io.BytesIO())

    fc = next(t for t in report.tensors if t.name == "fc.weight")
    assert fc.stored_bytes <= min(sizes.values())
    if fc.encoding == "sparse-shared":
        assert sizes[fc.index_bits] == fc.stored_bytes


def test_export_masked_weight_is_raw_and_exact():
    model = make_net()
    prune_model(model, sparsity=0.5)
    buffer = io.BytesIO()

    report = export_model(model, buffer, alignment_log2=0, record_settings=False)

    decoded = dcformat.load(buffer.getvalue())
    assert {t.encoding for t in report.tensors} == {"raw"}
    for name in WEIGHTS:
        np.testing.assert_array_equal(decoded[name], effective(model, name).numpy())


def test_export_float16_and_bfloat16_models():
    for dtype in (torch.float16, torch.bfloat16):
        model = make_net().to(dtype)
        prune_model(model, sparsity=0.5)
        share_model_weights(model, 4)
        buffer = io.BytesIO()
        export_model(model, buffer)
        decoded = dcformat.load(buffer.getvalue())
        for name in WEIGHTS:
            expected = effective(model, name)
            assert expected.dtype == dtype
            assert decoded[name].tobytes() == expected.contiguous().view(torch.int16).numpy().tobytes()


def test_export_rejects_bad_index_bits():
    with pytest.raises(ConfigError):
        export_model(make_net(), io.BytesIO(), index_bits=(17,))
    with pytest.raises(ConfigError):
        export_model(make_net(), io.BytesIO(), index_bits=())


# --------------------------------------------------------------------------------------
# Mixed precision


def test_autocast_bfloat16_training():
    model = make_net()
    prune_model(model, sparsity=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for stage in ("masked", "shared"):
        if stage == "shared":
            share_model_weights(model, 4)
            optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
        kept = masks(model)
        for step in range(3):
            x, y = make_batch(step)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x)
                loss = torch.nn.functional.cross_entropy(logits, y)
            assert logits.dtype == torch.bfloat16
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for name in WEIGHTS:
            weight = effective(model, name)
            assert weight.dtype == torch.float32
            assert torch.all(torch.isfinite(weight))
            assert torch.all(weight[~kept[name]] == 0)
    for parametrization in (model.conv.parametrizations.weight[0], model.fc.parametrizations.weight[0]):
        assert parametrization.centroids.grad.dtype == torch.float32


# --------------------------------------------------------------------------------------
# DistributedDataParallel


DDP_STEPS = 4
DDP_BATCH = 8


def _ddp_run(model, rank: int | None, world_size: int) -> dict[str, dict[str, torch.Tensor]]:
    """Prune, train, prune again, share and train. Rank None is the single-process reference.

    Each step draws one global batch, and each rank takes its own half of it. The averaged
    DDP gradient is then the single process's gradient on the whole batch.
    """
    from torch.nn.parallel import DistributedDataParallel

    def wrap(module):
        return module if rank is None else DistributedDataParallel(module)

    def steps(wrapped, optimizer, seed):
        for step in range(DDP_STEPS):
            x, y = make_batch(seed + step, size=DDP_BATCH * world_size)
            if rank is not None:
                x, y = x[rank::world_size], y[rank::world_size]
            loss = torch.nn.functional.cross_entropy(wrapped(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    prune_model(model, sparsity=0.5)
    wrapped = wrap(model)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    steps(wrapped, optimizer, 0)
    prune_model(wrapped, sparsity=0.7)  # in place, under the wrapper
    steps(wrapped, optimizer, 100)
    pruned = masks(model)

    share_model_weights(model, 3)
    wrapped = wrap(model)  # sharing replaced parameters, so wrap again
    optimizer = torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    steps(wrapped, optimizer, 200)
    return {"pruned": pruned, "masks": masks(model), "codebooks": codebooks(model)}


def _ddp_worker(rank: int, world_size: int, address: str, folder: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=address, rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        result = _ddp_run(make_net(), rank, world_size)
        torch.save(result, f"{folder}/rank{rank}.pt")
        # Rank 0 hosts the rendezvous store. Leaving before rank 1 is done with it aborted the
        # process in some runs ("terminate called without an active exception").
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ddp_two_processes_match_single_process(tmp_path, monkeypatch):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    address = f"tcp://127.0.0.1:{_free_port()}"

    torch.multiprocessing.spawn(_ddp_worker, args=(2, address, str(tmp_path)), nprocs=2, join=True)

    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    reference = _ddp_run(make_net(), None, 2)
    for name in WEIGHTS:
        for key in ("pruned", "masks", "codebooks"):
            assert torch.equal(ranks[0][key][name], ranks[1][key][name]), (key, name)
        assert torch.equal(ranks[0]["pruned"][name], reference["pruned"][name])
        assert torch.equal(ranks[0]["masks"][name], reference["masks"][name])
        torch.testing.assert_close(ranks[0]["codebooks"][name], reference["codebooks"][name],
                                   rtol=1e-4, atol=1e-5)
