import io
import os
from pathlib import Path

import pytest
import torch

from pipeline import losses
from pipeline.metrics import FrameCounts
from pipeline.model import Config, Seq2Seq


def _model(**kw):
    torch.manual_seed(0)
    return Seq2Seq(Config(n_features=12, hidden=16, layers=2, dropout=0.0, seq_len=8, nade_hidden=8, **kw)).eval()


HEADS = ["independent", "nade", "hold_nade"]


@pytest.mark.parametrize("head", HEADS)
def test_fused_teacher_forcing_equals_the_step_loop(head):
    m = _model(head=head)
    x, y = (torch.rand(3, 8, 12) > 0.7).float(), (torch.rand(3, 8, 12) > 0.7).float()
    fused = m(x, y)
    _, h = m.encoder(x)
    prev, steps = x[:, -1:], []
    for t in range(8):
        out, h = m.decoder(prev, h)
        steps.append(m.head(out, y[:, t:t + 1], prev))
        prev = y[:, t:t + 1]
    torch.testing.assert_close(fused, torch.cat(steps, 1))


@pytest.mark.parametrize("head", HEADS)
def test_free_running_feeds_back_its_own_steps(head):
    m = _model(head=head)
    x = (torch.rand(2, 8, 12) > 0.7).float()
    taken, logits = m.free(x, 5)
    assert taken.shape == logits.shape == (2, 5, 12)
    torch.testing.assert_close(m.free(x, 5)[1], logits)
    # replayed under teacher forcing, the steps it took get the logits it chose them from
    torch.testing.assert_close(m(x, taken), logits, atol=1e-5, rtol=1e-5)
    if head != "hold_nade":  # a held frame's logits carry its cost, not per-cell probabilities (heads.HoldNADE)
        assert torch.equal(taken, (torch.sigmoid(logits) > 0.5).float())


@pytest.mark.parametrize("head", HEADS)
def test_checkpoint_loads_with_weights_only(head):
    m = _model(head=head)
    buf = io.BytesIO()
    torch.save(m.checkpoint(), buf)
    buf.seek(0)
    again = Seq2Seq.from_checkpoint(torch.load(buf, weights_only=True)).eval()
    x = torch.rand(1, 8, 12)
    torch.testing.assert_close(m.free(x, 3)[1], again.free(x, 3)[1])


@pytest.mark.parametrize("head", HEADS)
def test_a_few_steps_fit_a_repeating_pattern(head):
    torch.manual_seed(0)
    m = Seq2Seq(Config(n_features=12, hidden=32, layers=1, dropout=0.0, seq_len=8, head=head, nade_hidden=8))
    pattern = torch.zeros(16, 12)
    pattern[torch.arange(16), torch.arange(16) % 12] = 1
    x, y = pattern[:8].expand(4, 8, 12), pattern[8:].expand(4, 8, 12)
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    first = None
    for _ in range(150):
        loss = losses.bce(m(x, y), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10
    assert torch.equal(m.eval().free(x[:1], 8)[0][0], y[0])


def _token_model():
    torch.manual_seed(0)
    return Seq2Seq(Config(n_features=20, hidden=16, layers=2, dropout=0.0, seq_len=8, tokens=True)).eval()


def test_token_model_fused_teacher_forcing_equals_the_step_loop_and_free_runs_on_argmax():
    m = _token_model()
    x, y = torch.randint(0, 20, (3, 8)), torch.randint(0, 20, (3, 8))
    fused = m(x, y)
    assert fused.shape == (3, 8, 20)
    _, h = m.encoder(m.embed(x))
    prev, steps = x[:, -1:], []
    for t in range(8):
        out, h = m.decoder(m.embed(prev), h)
        steps.append(m.head(out))
        prev = y[:, t:t + 1]
    torch.testing.assert_close(fused, torch.cat(steps, 1))
    chosen, free = m.free(x, 5)
    # free running feeds back its own argmax: the same as teacher forcing on that argmax
    assert torch.equal(chosen, free.argmax(-1))
    torch.testing.assert_close(m(x, chosen), free)


def test_token_model_learns_a_cycle():
    torch.manual_seed(0)
    m = Seq2Seq(Config(n_features=12, hidden=32, layers=1, dropout=0.0, seq_len=8, tokens=True))
    seq = torch.arange(16) % 5 + 3
    x, y = seq[:8].expand(4, 8), seq[8:].expand(4, 8)
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(m(x, y).transpose(1, 2), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(m.eval().free(x[:1], 8)[0][0], y[0])


def test_focal_reduces_to_scaled_bce_without_focusing():
    logits, target = torch.randn(4, 5, 6), (torch.rand(4, 5, 6) > 0.5).float()
    torch.testing.assert_close(losses.focal(logits, target, alpha=0.5, gamma=0.0), 0.5 * losses.bce(logits, target))
    assert losses.focal(logits, target, 0.5, 2.0) < losses.focal(logits, target, 0.5, 0.0)


def test_frame_counts():
    pred = torch.tensor([[[1, 1, 0, 0], [0, 0, 0, 0]]], dtype=torch.bool)
    true = torch.tensor([[[1, 0, 1, 0], [0, 0, 0, 1]]], dtype=torch.bool)
    c = FrameCounts()
    c.add(pred, true, nll_sum=3.0)
    s = c.summary()
    assert (c.tp, c.fp, c.fn, c.frames) == (1, 1, 2, 2)
    assert s["precision"] == 0.5 and s["recall"] == 1 / 3 and abs(s["f1"] - 0.4) < 1e-9
    assert s["accuracy"] == 0.25 and s["density_pred"] == 1.0 and s["density_true"] == 1.5
    assert s["nll_per_frame"] == 1.5


def test_ddp_on_cuda_with_more_processes_than_gpus_fails_before_launching(monkeypatch):
    from pipeline import runtime

    # seen on a one-GPU machine: rank 1 died with "invalid device ordinal"; now refused up front, by key
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(ValueError, match="train.processes=2 needs 2 GPUs but 1 are visible"):
        runtime.relaunch_under_torchrun("pipeline.train", 2, "auto")


def _against_nn_gru(ours, ref, x, h0):
    """Outputs, final states and the gradients of a random projection of both, w.r.t. the input, h0 (if given)
    and every parameter: nn.GRU's, then ours."""
    (o1, h1), (o2, h2) = ref(x, h0), ours(x, h0)
    w, v = torch.randn_like(o1), torch.randn_like(h1)
    inputs = [x] + ([h0] if h0 is not None else [])
    g1 = torch.autograd.grad((o1 * w).sum() + (h1 * v).sum(), inputs + list(ref.parameters()))
    g2 = torch.autograd.grad((o2 * w).sum() + (h2 * v).sum(), inputs + list(ours.parameters()))
    return (o1, h1, *g1), (o2, h2, *g2)


@pytest.mark.parametrize("batch_first", [True, False])
def test_cpu_gru_path_matches_nn_gru_values_and_gradients(batch_first):
    """pipeline.gru.GRU's own forward and backward against nn.GRU's, in float64 (so rounding cannot hide a bug)."""
    from torch import nn

    from pipeline.gru import GRU

    torch.manual_seed(0)
    ref = nn.GRU(7, 5, 3, batch_first=batch_first).double()
    ours = GRU(7, 5, 3, batch_first=batch_first).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 6, 7, dtype=torch.double, requires_grad=True)
    for h0 in (None, torch.randn(3, 4 if batch_first else 6, 5, dtype=torch.double, requires_grad=True)):
        want, got = _against_nn_gru(ours, ref, x, h0)
        for a, b in zip(want, got):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-12)


def test_fused_gate_kernels_match_nn_gru_in_float32():
    """gru_gates.cpp (float32, fast-math) against nn.GRU: values and every gradient, to float32 rounding.
    Odd sizes, so that no vector width divides the rows."""
    from torch import nn

    from pipeline.gru import GRU, gate_kernels

    if gate_kernels() is None:
        pytest.skip("the fused gate kernels could not be built here (no C++ compiler); the PyTorch-ops path "
                    "is tested in float64 above")
    torch.manual_seed(3)
    ref, ours = nn.GRU(11, 37, 2), GRU(11, 37, 2)
    ours.load_state_dict(ref.state_dict())
    x, h0 = torch.randn(9, 5, 11, requires_grad=True), torch.randn(2, 5, 37, requires_grad=True)
    want, got = _against_nn_gru(ours, ref, x, h0)
    for a, b in zip(want, got):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_gru_trains_with_pytorch_ops_when_the_kernels_cannot_be_built(tmp_path):
    """No C++ compiler (CXX=false here): a warning that says so, and the same results through PyTorch ops."""
    import subprocess
    import sys

    script = """
import warnings, torch
from torch import nn
from pipeline.gru import GRU, gate_kernels
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert gate_kernels() is None
print(caught[0].message)
torch.manual_seed(0)
ref, ours = nn.GRU(4, 6, 2), GRU(4, 6, 2)
ours.load_state_dict(ref.state_dict())
x = torch.randn(5, 3, 4)
ours(x)[0].sum().backward()
torch.testing.assert_close(ours(x)[0], ref(x)[0])
print("trained")
"""
    env = {**os.environ, "CXX": "false", "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fused gate kernels unavailable" in done.stdout and "trained" in done.stdout


def test_fused_gate_kernels_build_once_for_every_copy_of_the_repository(tmp_path):
    """DVC runs queued experiments in copies of the repository: each copy must load the one build, not
    recompile it (a minute each)."""
    import shutil
    import subprocess
    import sys

    from pipeline.gru import gate_kernels

    if gate_kernels() is None:
        pytest.skip("the fused gate kernels could not be built here (no C++ compiler)")
    script = "from pipeline.gru import gate_kernels; import os; print(os.stat(gate_kernels().__file__).st_mtime_ns)"
    stamps = []
    for copy in ("a", "b"):
        shutil.copytree(Path(__file__).parents[1] / "pipeline", tmp_path / copy / "pipeline")
        done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path / copy, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(tmp_path / copy)}, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        stamps.append(done.stdout.split()[-1])
    assert stamps[0] == stamps[1], "the second copy rebuilt the kernels"


def test_cpu_gru_follows_its_weights_through_optimizer_steps():
    """The prepared recurrent products are cached between calls: an update must reach the next forward."""
    from torch import nn

    from pipeline.gru import GRU

    torch.manual_seed(1)
    ours, x = GRU(3, 4, 1, batch_first=True), torch.randn(2, 5, 3)
    opt = torch.optim.SGD(ours.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        ours(x)[0].pow(2).sum().backward()
        opt.step()
        ref = nn.GRU(3, 4, 1, batch_first=True)
        ref.load_state_dict(ours.state_dict())
        torch.testing.assert_close(ours(x)[0], ref(x)[0])
        torch.testing.assert_close(ours(x[:, :1])[0], ref(x[:, :1])[0], rtol=0, atol=0)  # one step: nn.GRU's path


def test_cpu_gru_uses_weights_swapped_in_by_functional_call():
    """DropConnect (benchmarks/polyphonic.py --weight-drop) swaps in a fresh hidden-to-hidden weight each batch;
    its memory may be the last one's, so a cache keyed on the address would silently reuse the old mask."""
    from torch import nn
    from torch.func import functional_call

    from pipeline.gru import GRU

    torch.manual_seed(2)
    ours, x = GRU(3, 4, 1, batch_first=True), torch.randn(2, 5, 3)
    ref = nn.GRU(3, 4, 1, batch_first=True)
    ref.load_state_dict(ours.state_dict())
    w = ours.weight_hh_l0.detach()
    memory = torch.empty_like(w)
    for scale in (0.0, 1.0, -2.0):
        memory.copy_(w * scale)
        buf = torch.empty(0).set_(memory.untyped_storage(), 0, w.shape)  # a new tensor in the same memory,
        assert buf.data_ptr() == memory.data_ptr() and buf._version == 1  # as a caching allocator hands back
        params = dict(ours.named_parameters(), weight_hh_l0=buf)
        got = functional_call(ours, params, (x,))[0]
        want = functional_call(ref, dict(ref.named_parameters(), weight_hh_l0=buf), (x,))[0]
        torch.testing.assert_close(got, want)


def test_kernel_builds_are_kept_per_cpu():
    """-march=native code must not be loaded on another CPU from a shared home folder: the build's name keys
    on the model and instruction set, not on the per-core clock."""
    from pipeline.gru import cpu_key

    one = "processor\t: 0\nmodel name\t: Xeon\ncpu MHz\t\t: 2100.0\nflags\t\t: fpu sse2 avx2 avx512f\n"
    same_cpu = one.replace("2100.0", "2899.9") + one.replace("processor\t: 0", "processor\t: 1")
    no_avx512 = one.replace(" avx512f", "")
    other_model = one.replace("Xeon", "EPYC")
    assert cpu_key(one) == cpu_key(same_cpu)
    assert len({cpu_key(one), cpu_key(no_avx512), cpu_key(other_model)}) == 3
    assert cpu_key(one).isalnum()  # part of a Python module's name


def test_checkpoints_from_before_the_heads_load_as_the_independent_head():
    m = _model()
    old = m.checkpoint()
    old["config"] = {k: v for k, v in old["config"].items() if k not in ("head", "nade_hidden")}
    old["state_dict"] = {k.replace("head.net.", "head."): v for k, v in old["state_dict"].items()}
    assert "head.0.weight" in old["state_dict"]  # the layout those checkpoints have
    again = Seq2Seq.from_checkpoint(old).eval()
    x = torch.rand(1, 8, 12)
    torch.testing.assert_close(again.free(x, 3)[1], m.free(x, 3)[1])
