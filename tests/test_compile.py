"""`compile_model`: one graph for packed batches of any length, results equal to eager ones.

The graph counts come from dynamo's capture (backend ``eager``: quick); the numerical check runs
through AOT autograd as inductor does (backend ``aot_eager``), forward and backward.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from salt.models.compile import compilable, compile_calls, compile_counters, compile_model
from salt.models.layout import host_sizes
from salt.modelwrapper import ModelWrapper
from tests.test_models import make_model
from tests.test_models_gn3 import TYPES, VARIABLES, gn3_model, lrs


def packed_batch(n_jets: int, longest: int, types=("tracks",), seed=0, lengths=None):
    """A packed batch (inputs, valid, labels, sizes) whose longest jet has `longest` per type."""
    g = torch.Generator().manual_seed(seed)
    inputs = {"jets": torch.randn(n_jets, 2, generator=g) + 3.0}
    inputs["global"] = torch.randn(n_jets, 3, generator=g)
    valid = {}
    for name in types:
        n = torch.randint(0, longest + 1, (n_jets,), generator=g) if lengths is None else lengths
        n[0] = longest
        valid[name] = torch.arange(40)[None, :] < n[:, None]
        inputs[name] = torch.randn(int(valid[name].sum()), len(VARIABLES[name]), generator=g)
    n_tracks = int(valid["tracks"].sum())
    labels = {
        "jets": {
            "flavour_label": torch.randint(0, 3, (n_jets,), generator=g),
            "truth_pt": inputs["jets"][:, 0] * 1.1,
            "pt": inputs["jets"][:, 0],
        },
        "tracks": {
            "ftagTruthOriginLabel": torch.randint(0, 8, (n_tracks,), generator=g),
            "ftagTruthVertexIndex": torch.randint(-1, 3, (n_tracks,), generator=g),
        },
    }
    return inputs, valid, labels, host_sizes(valid, list(types))


# jets, longest jet: lengths, pairs and token counts all differ from batch to batch
VARYING = [(24, 7), (40, 20), (17, 40), (33, 3), (64, 12), (5, 2)]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_one_graph_for_training_and_one_for_evaluation_over_varying_lengths():
    model = compile_model(make_model().train(), backend="eager")
    before = compile_counters()
    # the first batch has as many tracks as jets: a duck-shaped graph would be guarded on that
    tied = torch.tensor([2, 0] * 12)
    batches = [packed_batch(24, 2, seed=99, lengths=tied)]
    batches += [packed_batch(b, n, seed=i) for i, (b, n) in enumerate(VARYING)]
    assert batches[0][0]["tracks"].shape[0] == 24
    for inputs, valid, labels, sizes in batches:
        _, losses = model(inputs, valid, labels, sizes)
        sum(losses.values()).backward()
    after = compile_counters()
    assert after["graphs"] - before["graphs"] == 1
    assert after["graph_breaks"] == before["graph_breaks"]
    model.eval()
    with torch.no_grad():
        for inputs, valid, labels, sizes in batches[:3]:
            model(inputs, valid, labels, sizes)
    assert compile_counters()["graphs"] - before["graphs"] == 2
    assert compile_calls(model) == {"compiled": 10, "eager": 0}


def test_batches_with_sizes_below_two_run_eagerly():
    model = compile_model(make_model().train(), backend="eager")
    graphs = compile_counters()["graphs"]
    model(*packed_batch(16, 9, seed=1))  # compiles
    single_tracks = packed_batch(16, 1, seed=2)  # longest jet 1, no pairs
    one_jet = packed_batch(1, 6, seed=3)
    no_sizes = packed_batch(16, 5, seed=4)[:3]
    for batch in (single_tracks, one_jet, no_sizes):
        outputs, losses = model(*batch)
        assert torch.isfinite(outputs["jets_classification"]).all()
        assert all(torch.isfinite(loss) for loss in losses.values())
    model(*packed_batch(20, 13, seed=5))
    assert compile_counters()["graphs"] - graphs == 1
    assert compile_calls(model) == {"compiled": 2, "eager": 3}
    assert not compilable(*single_tracks[:2], single_tracks[3])
    assert not compilable(*one_jet[:2], one_jet[3])
    assert not compilable(no_sizes[0], no_sizes[1], None)
    assert compilable(*packed_batch(3, 2, seed=6)[:2], packed_batch(3, 2, seed=6)[3])


def test_compile_model_keeps_parameters_and_state_dict_keys():
    model = gn3_model()
    keys = list(model.state_dict())
    params = list(model.parameters())
    assert compile_model(model, backend="eager") is model
    assert compile_model(model, backend="eager") is model  # twice: no second wrapper
    assert list(model.state_dict()) == keys
    assert list(model.parameters()) == params
    assert compile_calls(model) == {"compiled": 0, "eager": 0}
    assert compile_calls(gn3_model()) == {}


def test_a_copy_of_a_compiled_model_runs_its_own_weights():
    model = compile_model(make_model().train(), backend="eager")
    batch = packed_batch(12, 6, seed=7)
    model(*batch)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert compile_calls(clone) == {"compiled": 1, "eager": 0}
        with torch.no_grad():
            for p in clone.parameters():
                p.mul_(0.5)
        got, _ = clone(*batch)
        assert compile_calls(clone) == {"compiled": 2, "eager": 0}
        expected, _ = clone.forward.eager(*batch)  # the copy's own weights, eagerly
        torch.testing.assert_close(got["jets_classification"], expected["jets_classification"])
        original, _ = model(*batch)
        assert not torch.allclose(original["jets_classification"], got["jets_classification"])


@pytest.mark.slow
def test_compiled_training_steps_equal_eager_ones():
    """GN3-like (three types, registers): over batches of different lengths, one graph, and
    outputs, losses and gradients as eager (aot_eager). One encoder layer: AOT autograd's
    tracing time grows with the graph, and a second layer adds no kind of operation."""
    eager = gn3_model(registers=2, layers=1).train()
    compiled = compile_model(copy.deepcopy(eager), backend="aot_eager")
    wrapper = ModelWrapper(eager, lrs())
    graphs = compile_counters()["graphs"]
    for i, (n_jets, longest) in enumerate([(20, 9), (31, 25), (12, 4)]):
        inputs, valid, labels, sizes = packed_batch(n_jets, longest, TYPES, seed=10 + i)
        results = []
        for model in (eager, compiled):
            model.zero_grad()
            outputs, losses = model(inputs, valid, labels, sizes)
            wrapper.total_loss(losses).backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            results.append((outputs, losses, grads))
        (out_e, loss_e, grad_e), (out_c, loss_c, grad_c) = results
        for name in out_e:
            torch.testing.assert_close(out_c[name], out_e[name], rtol=1e-4, atol=1e-5)
        for name in loss_e:
            torch.testing.assert_close(loss_c[name], loss_e[name], rtol=1e-4, atol=1e-6)
        assert grad_c.keys() == grad_e.keys()
        for name in grad_e:
            torch.testing.assert_close(grad_c[name], grad_e[name], rtol=1e-3, atol=1e-5)
    assert compile_counters()["graphs"] - graphs == 1
    assert compile_calls(compiled) == {"compiled": 3, "eager": 0}
