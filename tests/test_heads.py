"""The NADE heads against brute force: a proper distribution over every frame, the right gradient, and decisions
that follow its conditionals; the hold gate's mixture and its sustain-plane marginal computed by hand."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from pipeline.heads import NADE, HoldNADE, Independent
from pipeline.sampling import Sampler


def _nade(width=6, hidden=5, units=4, seed=0):
    torch.manual_seed(seed)
    head = NADE(hidden, width, units).double()
    with torch.no_grad():  # weights large enough that the cells really depend on each other
        head.W.normal_(0, 1.5)
        head.V.normal_(0, 1.5)
    return head


def _hold_nade(keys=2, hidden=5, units=4, seed=0):
    torch.manual_seed(seed)
    head = HoldNADE(hidden, 2 * keys, units, keys).double()
    with torch.no_grad():
        head.W.normal_(0, 1.5)
        head.V.normal_(0, 1.5)
        head.gate.weight.normal_(0, 1.0)
    return head


def _log_prob(head, out, frames, prev=None, cells=slice(None)):
    """log p(frame) for every frame (n, width) at every state (batch, T, hidden): (n, batch, T); `cells`: sum the
    cross-entropy over these cells only (the sustain plane: that plane's log-probability)."""
    rows = []
    for f in frames:
        y = f.expand(*out.shape[:2], -1)
        bce = F.binary_cross_entropy_with_logits(head(out, y, prev), y, reduction="none")
        rows.append(-bce[..., cells].sum(-1))
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


def _prev(batch, T, keys):
    """Previous frames: sustain planes (one of them silent), onset planes that must not matter."""
    prev = (torch.rand(batch, T, 2 * keys, generator=torch.Generator().manual_seed(3)) > 0.5).double()
    prev[0, 0] = 0
    return prev


def test_hold_gate_is_the_mixture_of_the_hold_frame_and_the_nade_summing_to_one():
    """p(v) = pi [v = hold] + (1 - pi) NADE(v), hold = the previous sustain plane with no onset: by brute force
    over all 16 frames of two keys (two planes), at states whose previous frames differ."""
    head, out, keys = _hold_nade(), torch.randn(2, 3, 5, dtype=torch.double), 2
    prev, frames = _prev(2, 3, keys), _every_frame(2 * keys)
    got = _log_prob(head, out, frames, prev).exp()
    nade = NADE(5, 2 * keys, 4).double()
    nade.load_state_dict({k: v for k, v in head.state_dict().items() if not k.startswith("gate.")})
    q = _log_prob(nade, out, frames).exp()
    pi = torch.sigmoid(head.gate(out).squeeze(-1))
    hold = torch.cat([prev[..., :keys], torch.zeros_like(prev[..., keys:])], -1)
    is_hold = (frames.view(-1, 1, 1, 2 * keys) == hold).all(-1)
    torch.testing.assert_close(got, pi * is_hold + (1 - pi) * q, rtol=0, atol=1e-12)
    torch.testing.assert_close(got.sum(0), torch.ones(2, 3, dtype=torch.double), rtol=0, atol=1e-12)


def test_hold_gate_sustain_cells_give_the_sustain_planes_exact_marginal():
    """The summed cross-entropy over the sustain plane's cells is -log of the plane's marginal, the sum over
    every onset plane of the brute-force frame probabilities: what the pipeline reports as NLL per frame."""
    head, out, keys = _hold_nade(seed=1), torch.randn(2, 2, 5, dtype=torch.double), 2
    prev, frames = _prev(2, 2, keys), _every_frame(2 * keys)
    joint = _log_prob(head, out, frames, prev).exp()
    plane = _log_prob(head, out, frames, prev, cells=slice(0, keys)).exp()
    for i, f in enumerate(frames):
        same = (frames[:, :keys] == f[:keys]).all(1)
        torch.testing.assert_close(plane[i], joint[same].sum(0), rtol=0, atol=1e-10)


def test_hold_gate_gradient_matches_finite_differences():
    head = _hold_nade(keys=2, hidden=3, units=3)
    out = torch.randn(2, 3, 3, dtype=torch.double, requires_grad=True)
    prev = _prev(2, 3, 2)
    y = prev.clone()
    y[..., 2:] = 0
    y[1] = (torch.rand(3, 4, generator=torch.Generator().manual_seed(5)) > 0.5).double()  # some held, some not
    params = dict(head.named_parameters())
    nll = lambda o, g: F.binary_cross_entropy_with_logits(
        torch.func.functional_call(head, {**params, "gate.weight": g}, (o, y, prev)), y, reduction="sum")
    assert torch.autograd.gradcheck(nll, (out, head.gate.weight.detach().clone().requires_grad_()))


def test_hold_gate_sampling_draws_frames_with_their_probabilities():
    head, keys = _hold_nade(keys=1), 1
    out, prev = torch.randn(1, 1, 5, dtype=torch.double), torch.tensor([[[1.0, 1.0]]], dtype=torch.double)
    want = _log_prob(head, out, _every_frame(2 * keys), prev).exp()[:, 0, 0]
    n = 20000
    frames, _ = head.decide(out.expand(n, 1, 5), Sampler("bernoulli", generator=torch.Generator().manual_seed(0)),
                            prev.expand(n, 1, 2))
    got = torch.bincount((frames[:, 0] * torch.tensor([2.0, 1.0], dtype=torch.double)).sum(-1).long(),
                         minlength=4).double() / n
    torch.testing.assert_close(got, want, rtol=0, atol=0.015)


def test_hold_gate_decisions_hold_where_the_gate_passes_the_threshold():
    head, out, keys = _hold_nade(keys=3), torch.randn(4, 5, 5, dtype=torch.double), 3
    prev = _prev(4, 5, keys)
    frames, logits = head.decide(out, Sampler("threshold", threshold=0.5), prev)
    holds = torch.sigmoid(head.gate(out).squeeze(-1)) > 0.5
    assert 0 < holds.sum() < holds.numel()
    hold = torch.cat([prev[..., :keys], torch.zeros_like(prev[..., keys:])], -1)
    assert torch.equal(frames[holds], hold[holds])
    nade_frames, _ = NADE.decide(head, out, Sampler("threshold", threshold=0.5))
    assert torch.equal(frames[~holds], nade_frames[~holds])
    torch.testing.assert_close(logits, head(out, frames, prev), rtol=0, atol=0)
    cold, _ = head.decide(out, Sampler("bernoulli", temperature=1e-6, generator=torch.Generator().manual_seed(1)), prev)
    assert torch.equal(cold, frames)


def test_hold_gate_without_previous_frames_is_an_error():
    head = _hold_nade()
    with pytest.raises(ValueError, match="previous frames"):
        head(torch.randn(1, 1, 5, dtype=torch.double), torch.zeros(1, 1, 4, dtype=torch.double))


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
    """The resume fingerprint covers the source of every pipeline module the trainer can run (a checkpoint
    written by other code is not finished by this code): train's code deps in dvc.yaml, whatever this process
    has imported."""
    from pipeline import train

    names = {f.relative_to(train.ROOT).as_posix() for f in train.code_files()}
    assert {"pipeline/train.py", "pipeline/model.py", "pipeline/heads.py", "pipeline/gru.py",
            "pipeline/gru_gates.cpp", "pipeline/dataset.py", "pipeline/losses.py"} <= names
    assert "pipeline/tokens.py" in names  # imported only inside a function, by token runs: covered before it is
    assert "pipeline/report.py" not in names and "pipeline/prepare.py" not in names  # not what trains
    assert all(train.ROOT.joinpath(n).is_file() for n in names)


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
