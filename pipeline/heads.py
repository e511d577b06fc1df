"""Output heads: what the decoder state at a step says about the next step.

Every head answers the same two questions about decoder states `out` (batch, T, hidden), given `prev` (batch, T,
width), the step fed to the decoder before each (the one the model would repeat; only `HoldNADE` reads it):
- `head(out, y, prev)`: the logits that score the true steps `y`, such that the summed binary cross-entropy
  (piano rolls) or cross-entropy (tokens) of those logits against `y` is the exact negative log-likelihood of `y`,
  and for piano rolls the sum over the sustain plane's cells alone is that plane's;
- `head.decide(out, choose, prev)`: the steps the model takes, each cell (or token) chosen by `choose` from its
  logits (a `sampling.Sampler`: threshold, Bernoulli draw, most likely token, ...), and logits that score them
  (the ones they were chosen from; for `HoldNADE`, its `forward` of the frames chosen).

`Independent` gives every cell its own sigmoid (or the vocabulary a softmax); `NADE` models the cells of a frame
jointly, so a frame can be "this chord or that one" rather than a blend of both; `HoldNADE` first decides whether
the frame holds the previous one unchanged, then, if not, draws it from the NADE.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Independent(nn.Module):
    """One logit per cell (an independent Bernoulli each) or per token (a softmax): a small MLP on the state."""

    # a cell's decision does not depend on the others': one pass of probabilities serves every threshold
    factorised = True

    def __init__(self, hidden: int, width: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden // 2, width))

    def forward(self, out: torch.Tensor, y: torch.Tensor | None = None, prev: torch.Tensor | None = None
                ) -> torch.Tensor:
        """(batch, T, width) logits; `y` and `prev` are not needed (the cells do not condition on each other)."""
        return self.net(out)

    @torch.no_grad()
    def init_bias(self, freq: torch.Tensor) -> None:
        """Start each cell at its frequency in the training data (width,) rather than at p = 0.5: trained by
        likelihood from p = 0.5, the model first spends epochs learning that ~97% of cells are off."""
        self.net[-1].bias.copy_(torch.logit(freq.clamp(1e-4, 1 - 1e-4)))

    def decide(self, out: torch.Tensor, choose, prev: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(steps chosen, their logits): `choose` applied to the whole step at once."""
        logits = self.net(out)
        return choose(logits), logits


class NADE(nn.Module):
    """A neural autoregressive distribution estimator over the cells of a frame, conditioned on the decoder state.

    As in RNN-NADE (Boulanger-Lewandowski, Bengio & Vincent 2012, "Modeling temporal dependencies in
    high-dimensional sequences", ICML; NADE: Larochelle & Murray 2011, AISTATS): the decoder state gives the
    NADE's visible biases b_v = A out and hidden biases b_h = B out, the weights W, V are shared by every frame,
    and for the cells v_1..v_D in a fixed order

        h_d = sigmoid(b_h + sum_{i<d} v_i W_i),    p(v_d = 1 | v_<d) = sigmoid(b_v,d + V_d . h_d),

    so p(v) = prod_d p(v_d | v_<d) is a proper distribution over all 2^D frames. The order is the frame's own
    layout: the sustain plane, keys from low to high (drum classes after the pitches, in GM class order), then the
    onset plane in the same order. Sustain first means the first n_keys conditionals are the exact likelihood
    of what sounds, and every onset decision sees the whole chord it belongs to.

    Shapes: out (batch, T, hidden), frames (batch, T, D); `hidden_nade` units. Training is one pass over the
    frame (no loop over cells); decisions loop over the D cells, every frame of the batch at once.
    """

    factorised = False

    def __init__(self, hidden: int, width: int, hidden_nade: int):
        super().__init__()
        self.to_visible = nn.Linear(hidden, width)
        self.to_hidden = nn.Linear(hidden, hidden_nade)
        self.W = nn.Parameter(torch.randn(width, hidden_nade) * 0.01)  # cell d -> hidden, row d
        self.V = nn.Parameter(torch.randn(width, hidden_nade) * 0.01)  # hidden -> cell d, row d

    @torch.no_grad()
    def init_bias(self, freq: torch.Tensor) -> None:
        """Start each cell's visible bias at its frequency in the training data (width,): from p = 0.5 the
        likelihood sits on a plateau for many epochs on real rolls (valid NLL 11.9 nats/frame after 3 epochs of
        the default run, against 4.5 with this start)."""
        self.to_visible.bias.copy_(torch.logit(freq.clamp(1e-4, 1 - 1e-4)))

    def forward(self, out: torch.Tensor, y: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, T, D) logits of p(y_d = 1 | y_<d, state): the summed binary cross-entropy of these against
        `y` is exactly -log p(y), in nats.

        The hidden pre-activation only changes where a cell is on, so a frame with n cells on has n + 1
        distinct hidden vectors: they are computed once each (segment s sums the W rows of the frame's first s
        cells on), every cell's logit is then read from the product of its segment's vector with V. That is
        (batch x T x (n + 1) x D x hidden_nade) work in one matrix product, where the textbook running sum over
        every cell materialises (batch x T x D x hidden_nade) floats several times: a whole training step at the
        default size took 451 ms that way against 164 ms this way (2 CPU cores, hidden_nade 64)."""
        b_v, b_h = self.to_visible(out), self.to_hidden(out)
        width, units = self.W.shape
        on = y.reshape(-1, width) > 0.5                                      # (N, D)
        before = on.cumsum(1) - on.long()                                    # cells on before each cell
        n_on = int(on.sum(1).max()) if on.numel() else 0
        # segment s of a frame sums the W rows of its first s cells on: a mask product, not an indexed sum,
        # whose CPU backward accumulates in a thread-dependent order (the weights would differ run to run)
        first = on.unsqueeze(1) & (before.unsqueeze(1) < torch.arange(n_on + 1, device=y.device).view(1, -1, 1))
        a = first.to(self.W.dtype) @ self.W + b_h.reshape(-1, 1, units)      # (N, n_on + 1, units)
        per_segment = torch.sigmoid(a) @ self.V.T                            # (N, n_on + 1, D)
        return b_v + per_segment.gather(1, before.unsqueeze(1)).reshape(b_v.shape)

    def decide(self, out: torch.Tensor, choose, prev: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(frames chosen, the logits they were chosen from): cell by cell in the head's order, each conditional
        given the cells already chosen, all frames of the batch at once."""
        b_v, a = self.to_visible(out), self.to_hidden(out)
        frames = torch.zeros_like(b_v)
        logits = torch.zeros_like(b_v)
        for d in range(b_v.size(-1)):
            z = b_v[..., d:d + 1] + torch.sigmoid(a) @ self.V[d].unsqueeze(-1)
            v = choose(z).to(b_v.dtype)
            logits[..., d:d + 1] = z
            frames[..., d:d + 1] = v
            a = a + v * self.W[d]
        return frames, logits


# a cell's logit that stands for certainty: its binary cross-entropy, softplus(-40), is 4e-18 nats
SURE = 40.0


def _logit_costing(nats: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """The logit whose binary cross-entropy against the target `on` (bool) is `nats` (> 0): z = log(e^nats - 1)
    for an off cell, -z for an on one. Differentiable, d(BCE)/d(nats) = 1."""
    c = nats.clamp_min(1e-12)
    z = c + torch.log(-torch.expm1(-c))  # log(e^c - 1), stable at both ends
    return torch.where(on, -z, z)


class HoldNADE(NADE):
    """A hold gate before the NADE: each frame first decides whether it holds the previous frame unchanged.

    The hold frame h(prev) is the previous frame's sustain plane with no onset: every sounding key held, nothing
    new struck. A gate on the decoder state gives pi = sigmoid(w . out + c), and the frame's distribution is the
    mixture of a point mass on the hold frame and the NADE (a zero-inflated, spike-and-slab form):

        p(v) = pi [v = h(prev)] + (1 - pi) NADE(v),

    exact and normalised (every 2^D frame sums to 1). Why: in Bach chorales 61% of frames are such holds, and a
    beat in which no note starts (7 to 8% of real beats, fermatas and half-note cadences) needs four of them in a row.
    The plain NADE reaches a hold only through D conditionals all landing right, so its samples almost never
    hold a whole beat (0.007 empty beats against 0.068 real, as often when every past frame is the true one); with the
    gate a hold is one decision. See docs/generation.md, Which generator.

    Its logits keep the heads' contract: summed binary cross-entropy over the frame is -log p(v), and over the
    sustain plane alone -log p(sustain plane), the plane's marginal pi [s = s_prev] + (1 - pi) NADE(s) (the
    NADE orders that plane first). For a frame whose sustain plane differs from the previous one, those are the
    NADE's logits with -log(1 - pi) added to the first cell; for one that repeats it, the whole cost is carried by
    the first cell of each plane and every other cell is certain. So the logits of such frames are not
    per-cell probabilities: read decisions from `decide`, never sigmoid(logits) (this head is not factorised).
    """

    def __init__(self, hidden: int, width: int, hidden_nade: int, n_keys: int):
        super().__init__(hidden, width, hidden_nade)
        if width not in (n_keys, 2 * n_keys):
            raise ValueError(f"a hold gate needs one or two planes of {n_keys} keys, not a frame of {width} cells")
        self.n_keys = n_keys
        self.gate = nn.Linear(hidden, 1)

    def hold(self, prev: torch.Tensor) -> torch.Tensor:
        """The hold frame of each previous frame (..., D): its sustain plane, the onset plane off."""
        if prev is None:
            raise ValueError("a hold gate needs the previous frames (prev)")
        k = self.n_keys
        return torch.cat([prev[..., :k], torch.zeros_like(prev[..., k:])], -1)

    def forward(self, out: torch.Tensor, y: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        z = super().forward(out, y)
        k, on = self.n_keys, y > 0.5
        cell = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        log_q, log_qs = -cell.sum(-1), -cell[..., :k].sum(-1)            # NADE(v), NADE(sustain plane)
        held_s = (on[..., :k] == (self.hold(prev)[..., :k] > 0.5)).all(-1)  # the sustain plane repeats
        held = held_s & ~on[..., k:].any(-1)                              # ... and nothing is struck
        g = self.gate(out).squeeze(-1)
        log_pi, log_not = F.logsigmoid(g), F.logsigmoid(-g)
        nll = -torch.where(held, torch.logaddexp(log_pi, log_not + log_q), log_not + log_q)
        nll_s = -torch.where(held_s, torch.logaddexp(log_pi, log_not + log_qs), log_not + log_qs)
        # sustain plane repeated: the first cell carries the plane's cost, the first onset cell the rest
        fixed = torch.where(on, SURE, -SURE).to(z.dtype)
        fixed[..., 0] = _logit_costing(nll_s, on[..., 0])
        if z.size(-1) > k:
            fixed[..., k] = _logit_costing(nll - nll_s, on[..., k])
        # otherwise: the NADE's logits, the gate's -log(1 - pi) added to the first cell
        moved = torch.cat([_logit_costing(cell[..., 0] - log_not, on[..., 0]).unsqueeze(-1), z[..., 1:]], -1)
        return torch.where(held_s.unsqueeze(-1), fixed, moved)

    def decide(self, out: torch.Tensor, choose, prev: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The gate decided by `choose` first (threshold: hold when pi passes it; bernoulli: hold with
        probability pi), then the NADE's frame where the frame does not hold. The logits returned score the
        frames chosen (this head's `forward`)."""
        hold = choose(self.gate(out)) > 0.5
        frames, _ = super().decide(out, choose)
        frames = torch.where(hold, self.hold(prev).to(frames.dtype), frames)
        return frames, self.forward(out, frames, prev)


def make(kind: str, hidden: int, width: int, dropout: float, hidden_nade: int | None,
         n_keys: int | None = None) -> nn.Module:
    """The head for `model.head` (tokens always use `independent`: one softmax over the vocabulary). `n_keys`:
    the keys per plane of a frame (the hold gate's hold frame); None: the frame is one plane."""
    if kind in ("nade", "hold_nade"):
        if not hidden_nade:
            raise ValueError(f"a {kind} head needs its number of hidden units (model.nade_hidden)")
        if kind == "hold_nade":
            return HoldNADE(hidden, width, hidden_nade, n_keys or width)
        return NADE(hidden, width, hidden_nade)
    if kind == "independent":
        return Independent(hidden, width, dropout)
    raise ValueError(f"unknown head {kind!r}: independent | nade | hold_nade")
