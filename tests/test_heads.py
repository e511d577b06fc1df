"""The NADE head against brute force: a proper distribution over every frame, the right gradient, and decisions
that follow its conditionals."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from pipeline.heads import NADE, Independent
from pipeline.sampling import Sampler


def _nade(width=6, hidden=5, units=4, seed=0):
    torch.manual_seed(seed)
    head = NADE(hidden, width, units).double()
    with torch.no_grad():  # weights large enough that the cells really depend on each other
        head.W.normal_(0, 1.5)
        head.V.normal_(0, 1.5)
    return head


def _log_prob(head, out, frames):
    """log p(frame) for every frame (n, width) at every state (batch, T, hidden): (n, batch, T)."""
    rows = []
    for f in frames:
        y = f.expand(*out.shape[:2], -1)
        rows.append(-F.binary_cross_entropy_with_logits(head(out, y), y, reduction="none").sum(-1))
    return torch.stack(rows)


def _every_frame(width):
    return torch.tensor(list(itertools.product([0, 1], repeat=width)), dtype=torch.double)


def test_nade_probabilities_of_all_frames_sum_to_one():
    head, out = _nade(), torch.randn(2, 3, 5, dtype=torch.double)
    total = _log_prob(head, out, _every_frame(6)).exp().sum(0)
    torch.testing.assert_close(total, torch.ones(2, 3, dtype=torch.double), rtol=0, atol=1e-12)


def test_nade_conditionals_match_the_chain_rule_by_brute_force():
    """p(v_d = 1 | v_<d) from the head equals the ratio of brute-force marginals over all completions."""
    head, out = _nade(width=5), torch.randn(1, 1, 5, dtype=torch.double)
    frames = _every_frame(5)
    p = _log_prob(head, out, frames).exp()[:, 0, 0]
    y = torch.tensor([1, 0, 1, 1, 0], dtype=torch.double)
    cond = torch.sigmoid(head(out, y.view(1, 1, 5)))[0, 0]
    for d in range(5):
        prefix = (frames[:, :d] == y[:d]).all(1)
        want = p[prefix & (frames[:, d] == 1)].sum() / p[prefix].sum()
        torch.testing.assert_close(cond[d], want, rtol=0, atol=1e-12)


def test_nade_gradient_matches_finite_differences():
    head = _nade(width=4, hidden=3, units=3)
    out = torch.randn(2, 2, 3, dtype=torch.double, requires_grad=True)
    y = (torch.rand(2, 2, 4) > 0.5).double()
    nll = lambda o, W, V: F.binary_cross_entropy_with_logits(
        torch.func.functional_call(head, {**dict(head.named_parameters()), "W": W, "V": V}, (o, y)), y,
        reduction="sum")
    assert torch.autograd.gradcheck(nll, (out, head.W.detach().clone().requires_grad_(),
                                          head.V.detach().clone().requires_grad_()))


def test_nade_decisions_follow_its_conditionals_cell_by_cell():
    """Threshold decisions: each cell is on when its conditional given the cells already decided passes the
    threshold; the logits returned are those conditionals (teacher forcing on the chosen frame gives them back)."""
    head, out = _nade(width=8), torch.randn(4, 3, 5, dtype=torch.double)
    for t in (0.3, 0.5, 0.7):
        frames, logits = head.decide(out, lambda z, t=t: (torch.sigmoid(z) > t).double())
        torch.testing.assert_close(head(out, frames), logits, rtol=0, atol=1e-12)
        assert torch.equal(frames, (torch.sigmoid(logits) > t).double())


def test_nade_sampling_draws_frames_with_their_probabilities():
    head, out = _nade(width=3), torch.randn(1, 1, 5, dtype=torch.double)
    want = _log_prob(head, out, _every_frame(3)).exp()[:, 0, 0]
    sampler = Sampler("bernoulli", generator=torch.Generator().manual_seed(0))
    frames, _ = head.decide(out.expand(20000, 1, 5), sampler)
    code = (frames[:, 0] * torch.tensor([4.0, 2.0, 1.0], dtype=torch.double)).sum(-1).long()
    got = torch.bincount(code, minlength=8).double() / len(code)
    torch.testing.assert_close(got, want, rtol=0, atol=0.015)


@pytest.mark.parametrize("make", [lambda: _nade(width=8), lambda: Independent(5, 8, 0.0).double().eval()])
def test_sampling_as_the_temperature_goes_to_zero_gives_the_threshold_decisions(make):
    head, out = make(), torch.randn(6, 4, 5, dtype=torch.double)
    threshold, _ = head.decide(out, Sampler("threshold", threshold=0.5))
    cold, _ = head.decide(out, Sampler("bernoulli", temperature=1e-6, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(cold.double(), threshold.double())


def test_threshold_grid_counts_each_thresholds_decisions():
    from pipeline.metrics import ThresholdGrid

    grid = ThresholdGrid()
    true = torch.tensor([[1, 1, 0, 0]])
    for i, t in enumerate(grid.THRESHOLDS):  # below 0.5 every cell is on, from 0.5 only the first
        grid.add(i, torch.tensor([[1, 1, 1, 1]]) if t < 0.5 else torch.tensor([[1, 0, 0, 0]]), true)
    t, prec, rec, f1 = grid.curve()
    low, high = int((t < 0.5).sum()) - 1, int((t < 0.5).sum())
    assert (prec[low], rec[low], f1[low]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert (prec[high], rec[high], f1[high]) == (1.0, 0.5, pytest.approx(2 / 3))
    assert grid.best() == (pytest.approx(0.05), pytest.approx(2 / 3))  # the lowest of the best


def test_training_resumes_only_with_the_same_code():
    """The resume fingerprint covers the source of every pipeline module the trainer runs (a checkpoint written
    by other code is not finished by this code)."""
    from pipeline import train

    names = {f.name for f in train.code_files()}
    assert {"train.py", "model.py", "heads.py", "gru.py", "gru_gates.cpp", "dataset.py", "losses.py"} <= names
    assert "report.py" not in names  # not what trains


def test_nade_gradients_are_the_same_bits_every_time():
    """Reproducible training: the NADE's backward must not depend on how threads interleave (an indexed sum of
    its W rows did: its CPU backward accumulates in a thread-dependent order)."""
    torch.manual_seed(0)
    head = NADE(16, 176, 32)
    out, y = torch.randn(256, 8, 16), (torch.rand(256, 8, 176) < 0.05).float()
    grads = []
    for _ in range(3):
        head.zero_grad()
        F.binary_cross_entropy_with_logits(head(out, y), y).backward()
        grads.append([p.grad.clone() for p in head.parameters()])
    for again in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads[0], again))
