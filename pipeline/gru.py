"""nn.GRU with a faster CPU training path: the same parameters, state dict and results (to rounding).

On CPU, nn.GRU runs each step's recurrent matmul as h @ W_hh^T on the transposed view of the (3H, H) weight,
and its backward forms the weight gradient once per step (a product with K = batch) and adds it up, a 3 MB
accumulation per step. Measured on 2 cores at hidden 512, batch 64: h @ W^T on the view ran at ~55 GFLOP/s,
h @ W on a contiguous (H, 3H) copy at ~120, and one weight-gradient product over all batch x time rows at
~150. So the CPU path keeps a contiguous transposed copy of W_hh for the recurrence, writes each step into
preallocated buffers, takes the gates' local derivatives for all steps at once, and forms every weight gradient
with one large matmul at the end. A training step at DeepMusician's size (hidden 512) is 6 to 11 % faster
(benchmarks/train_speed.py, two runs), at hidden 1024 about 12 %; at the default hidden 256 the two are even. CUDA keeps
cuDNN (nn.GRU's own forward), and so does a one-step call (a decoder loop), where there is nothing to batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Layer(torch.autograd.Function):
    """One GRU layer over a (T, B, I) sequence, PyTorch's gate equations (n uses r * (W_hn h + b_hn)).

    Every step writes into preallocated buffers (`out=`): one matmul and a few elementwise kernels each way.
    """

    @staticmethod
    def forward(ctx, x, h, w_ih, w_hh, b_ih, b_hh, w_hh_t):
        T, B, _ = x.shape
        H = h.size(1)
        gi = torch.addmm(b_ih, x.reshape(T * B, -1), w_ih.t()).view(T, B, 3 * H)  # input side, all steps at once
        gi[:, :, :2 * H] += b_hh[:2 * H]  # r and z take both biases as a sum; b_hn stays inside r * (...)
        gh = x.new_empty(T, B, 3 * H)     # recurrent side, W_h h (+ b_hn: its n part is what r scales)
        rz = x.new_empty(T, B, 2 * H)     # r and z after the sigmoid
        n = x.new_empty(T, B, H)
        hs = x.new_empty(T + 1, B, H)
        hs[0] = h
        b_hn = b_hh[2 * H:]
        for t in range(T):
            torch.mm(hs[t], w_hh_t, out=gh[t])
            gh[t, :, 2 * H:] += b_hn
            torch.add(gi[t, :, :2 * H], gh[t, :, :2 * H], out=rz[t]).sigmoid_()
            torch.addcmul(gi[t, :, 2 * H:], rz[t, :, :H], gh[t, :, 2 * H:], out=n[t]).tanh_()
            torch.lerp(n[t], hs[t], rz[t, :, H:], out=hs[t + 1])  # (1 - z) n + z h
        ctx.save_for_backward(x, w_ih, w_hh, hs, gh, rz, n)
        return hs[1:], hs[T].clone()

    @staticmethod
    def backward(ctx, d_out, d_last):
        x, w_ih, w_hh, hs, gh, rz, n = ctx.saved_tensors
        T, B, H = d_out.size(0), d_out.size(1), hs.size(2)
        d_gh = d_out.new_empty(T, B, 3 * H)  # gradients of the gate pre-activations, recurrent side
        d_gin = d_out.new_empty(T, B, H)     # input side of the n gate (r and z are the same on both sides)
        r, z = rz[:, :, :H], rz[:, :, H:]
        # the local derivatives, for all steps at once; the loop below is then one product per gate
        f_n = (1 - z) * (1 - n * n)                 # d h'/d n-preactivation, per unit of d h'
        f_r = gh[:, :, 2 * H:] * r * (1 - r)        # d n-preactivation/d r-preactivation, per unit of it
        f_z = (hs[:-1] - n) * z * (1 - z)           # d h'/d z-preactivation
        dh = d_out[T - 1] + d_last
        for t in reversed(range(T)):
            if t < T - 1:
                dh += d_out[t]
            torch.mul(dh, f_n[t], out=d_gin[t])
            torch.mul(d_gin[t], r[t], out=d_gh[t, :, 2 * H:])
            torch.mul(d_gin[t], f_r[t], out=d_gh[t, :, :H])
            torch.mul(dh, f_z[t], out=d_gh[t, :, H:2 * H])
            dh = torch.addmm(dh * z[t], d_gh[t], w_hh)
        # every weight gradient is one large matmul over all batch x time rows
        d_w_hh = d_gh.view(T * B, 3 * H).t() @ hs[:-1].reshape(T * B, H)
        d_b_hh = d_gh.view(T * B, 3 * H).sum(0)
        d_gi = d_gh
        d_gi[:, :, 2 * H:] = d_gin  # reuse the buffer: now the input side
        d_gi2 = d_gi.view(T * B, 3 * H)
        dx = (d_gi2 @ w_ih).view(T, B, -1) if ctx.needs_input_grad[0] else None
        return dx, dh, d_gi2.t() @ x.reshape(T * B, -1), d_w_hh, d_gi2.sum(0), d_b_hh, None


class GRU(nn.GRU):
    """Drop-in nn.GRU (unidirectional, with biases) whose CPU path is _Layer; CUDA runs nn.GRU's cuDNN."""

    def _transposed(self, k: int) -> torch.Tensor:
        """W_hh^T of layer k, contiguous; copied again only when the weight has changed (an optimizer step, a
        load), not at every batch of an evaluation. A weight that is not the module's own parameter (swapped in
        by torch.func.functional_call, e.g. with DropConnect) is copied every call: its memory may be reused."""
        w = getattr(self, f"weight_hh_l{k}")
        if not isinstance(w, nn.Parameter):
            return w.detach().t().contiguous()
        key = (w.data_ptr(), w._version)
        cache = self.__dict__.setdefault("_wt_cache", {})
        if cache.get(k, (None,))[0] != key:
            cache[k] = (key, w.detach().t().contiguous())
        return cache[k][1]

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None):
        steps = x.size(1 if self.batch_first else 0) if x.dim() == 3 else 0
        if x.is_cuda or self.bidirectional or not self.bias or steps < 2 or torch.is_autocast_enabled("cpu"):
            return super().forward(x, h0)
        seq = x.transpose(0, 1) if self.batch_first else x
        if h0 is None:
            h0 = seq.new_zeros(self.num_layers, seq.size(1), self.hidden_size)
        finals = []
        for k in range(self.num_layers):
            if k and self.dropout and self.training:
                seq = F.dropout(seq, self.dropout, training=True)
            seq, last = _Layer.apply(seq.contiguous(), h0[k], getattr(self, f"weight_ih_l{k}"),
                                     getattr(self, f"weight_hh_l{k}"), getattr(self, f"bias_ih_l{k}"),
                                     getattr(self, f"bias_hh_l{k}"), self._transposed(k))
            finals.append(last)
        out = seq.transpose(0, 1) if self.batch_first else seq
        return out, torch.stack(finals)
