"""nn.GRU with a faster CPU training path: the same parameters, state dict and results (to rounding).

On CPU, nn.GRU runs each step's recurrent matmul as h @ W_hh^T on the transposed view of the (3H, H) weight,
runs the gate arithmetic as a handful of separate kernels, and its backward forms the weight gradient once per
step (a product with K = batch) and adds it up, a 3 MB accumulation per step. Here, per layer: the recurrent
products go through MKL's packed GEMM (the weight reordered once per sequence), each step's gates are one pass
of gru_gates.cpp (compiled at first use; PyTorch ops where no compiler is found), and every weight gradient is
one large matmul over all batch x time rows at the end. A training step at DeepMusician's size (hidden 512,
batch 64, 2 threads) is about a fifth faster than nn.GRU's (benchmarks/train_speed.py). CUDA keeps cuDNN
(nn.GRU's own forward), and so does a one-step call (a decoder loop), where there is nothing to batch.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import importlib.util
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

_MKL = torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


class _Times:
    """x @ w.T for many x against one w (a recurrent weight, used at every step). Where PyTorch has MKL, w is
    reordered once into MKL's packed GEMM format (float32); measured on 2 cores at batch 64, H 512: the step's
    product at 160-210 GFLOP/s against 125-145 for torch.mm on a contiguous w.T, and 165-185 against 140-165 for
    the backward's product with w. Elsewhere (other dtypes, builds without MKL) a contiguous copy of w.T, which
    is itself about twice as fast as the transposed view nn.GRU multiplies by."""

    def __init__(self, w: torch.Tensor, rows: int):
        self.w = w.detach()
        self.packed = _MKL and w.dtype == torch.float32 and w.device.type == "cpu"
        self.right = torch.ops.mkl._mkl_reorder_linear_weight(self.w, rows) if self.packed else self.w.t().contiguous()

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.packed:
            return torch.ops.mkl._mkl_linear(x, self.right, self.w, bias, x.size(0))
        return x @ self.right if bias is None else torch.addmm(bias, x, self.right)


def _torch_forward(gi, gh, h, rz, ghn, n, h_next):
    """One forward step's gates as PyTorch ops (what gru_gates.cpp's forward does in one pass)."""
    H = h.size(1)
    torch.add(gi[:, :2 * H], gh[:, :2 * H], out=rz).sigmoid_()
    ghn.copy_(gh[:, 2 * H:])
    torch.addcmul(gi[:, 2 * H:], rz[:, :H], ghn, out=n).tanh_()
    torch.lerp(n, h, rz[:, H:], out=h_next)  # (1 - z) n + z h


def cpu_key(cpuinfo: str) -> str:
    """What a -march=native build depends on: the CPU model and instruction set (from /proc/cpuinfo's text; the
    per-core clock lines left out), so a home folder shared by different machines keeps a build per CPU instead
    of loading one that uses instructions this CPU lacks (SIGILL)."""
    lines = {line for line in cpuinfo.splitlines()
             if line.startswith(("model name", "flags", "Features", "CPU implementer", "CPU part"))}
    ident = "\n".join(sorted(lines)) + platform.machine() + platform.processor()
    return hashlib.sha1(ident.encode()).hexdigest()[:12]


_CFLAGS = ["-O3", "-ffast-math", "-march=native", "-fopenmp"]  # fast-math: vectorised exp and tanh
_LDFLAGS = ["-fopenmp"]
BUILD_WAIT_S = 300.0  # longest wait for another process's build of the kernels; $PIPELINE_GRU_BUILD_WAIT_S overrides


def build_name(source: str, cpuinfo: str, prefix: str = sys.prefix, executable: str = sys.executable) -> str:
    """The build's module and folder name: the CPU's key, then a digest of everything else the binary depends on:
    the source text, flags, compiler, Python and PyTorch, and the environment (sys.prefix, the interpreter,
    torch's folder, whose include paths the build file records), so that two virtualenvs sharing one cache keep a
    build each instead of rebuilding at every switch. Not the source's path: copies of the repository (a DVC
    experiment's temp folder) share the build."""
    parts = [source, *_CFLAGS, *_LDFLAGS, os.environ.get("CXX", ""), sys.version, torch.__version__,
             os.path.dirname(torch.__file__), prefix, executable]
    digest = hashlib.sha1("\0".join(parts).encode()).hexdigest()[:12]
    return f"pipeline_gru_gates_{cpu_key(cpuinfo)}_{digest}"


def build_folder() -> Path:
    """This environment's build folder, under PyTorch's extensions root (~/.cache/torch_extensions/py3X_cpu, or
    $TORCH_EXTENSIONS_DIR, as PyTorch picks it)."""
    from torch.utils.cpp_extension import _get_build_directory
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: the machine and processor names alone
        cpuinfo = ""
    source = Path(__file__).with_name("gru_gates.cpp").read_text()
    return Path(_get_build_directory(build_name(source, cpuinfo), verbose=False))


def _import_built(folder: Path):
    """The module built in `folder`, or None where no build there has completed (no `built` marker) or the
    library does not load (damaged: built again)."""
    if not (folder / "built").is_file():
        return None
    spec = importlib.util.spec_from_file_location(folder.name, folder / f"{folder.name}.so")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError:
        return None
    print("pipeline.gru: loading the fused GRU gate kernels", file=sys.stderr, flush=True)
    return module


def _lock(path: Path, wait: float):
    """`path` opened and exclusively flock-ed, or None when another process held it for all of `wait` seconds."""
    import fcntl  # POSIX; imported here so that the module itself imports anywhere
    f = open(path, "a")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() >= deadline:
                f.close()
                return None
            time.sleep(0.2)


def _build(folder: Path):
    """Compiles gru_gates.cpp in `folder` (the caller holds its build lock) and marks the build complete."""
    if folder.exists() and any(folder.iterdir()):  # a dead build's: moved aside, its compiler may still be running
        folder.rename(folder.with_name(f"{folder.name}.stale-{os.getpid()}-{time.time_ns()}"))
    for stale in folder.parent.glob(glob.escape(folder.name) + ".stale-*"):
        shutil.rmtree(stale, ignore_errors=True)
    folder.mkdir(exist_ok=True)  # present again if another process has called build_folder() since
    if not shutil.which("ninja"):  # the ninja wheel's binary, when the venv's bin/ is not on PATH
        import ninja
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    print("pipeline.gru: building the fused GRU gate kernels (once per machine and environment, about a minute)",
          file=sys.stderr, flush=True)
    from torch.utils.cpp_extension import load_inline
    module = load_inline(folder.name, [Path(__file__).with_name("gru_gates.cpp").read_text()],
                         extra_cflags=_CFLAGS, extra_ldflags=_LDFLAGS, build_directory=str(folder))
    (folder / "built.part").write_text(module.__file__ + "\n")
    os.replace(folder / "built.part", folder / "built")  # last: the mark of a complete build
    return module


@functools.cache
def gate_kernels():
    """gru_gates.cpp, compiled once per machine and environment by PyTorch's extension loader (about a minute;
    in build_folder()). None, with a warning, where it cannot be built (no C++ compiler), with
    PIPELINE_GRU_KERNELS=0, or when another process's build held the lock for BUILD_WAIT_S: the gates then run
    as PyTorch ops, same results to rounding.

    No process killed at any point (SIGKILL, Ctrl-C, the OOM killer) blocks a later one. A completed build,
    marked by a `built` file written last, is imported directly, taking no lock. A build runs under an flock on
    <folder>.lock, which the kernel releases when its holder dies, so no lock outlives its process; whatever the
    folder holds without the marker is then a dead build's leftovers (PyTorch's own `lock` file among them, on
    which load_inline would wait forever) and is moved aside before building."""
    if os.environ.get("PIPELINE_GRU_KERNELS", "1") == "0":
        return None
    try:
        folder = build_folder()
        module = _import_built(folder)
        if module is not None:
            return module
        wait = float(os.environ.get("PIPELINE_GRU_BUILD_WAIT_S", BUILD_WAIT_S))
        lock_path = folder.with_name(folder.name + ".lock")
        lock = _lock(lock_path, wait)
        if lock is None:
            warnings.warn(f"pipeline.gru: fused gate kernels unavailable: another process held the build lock "
                          f"{lock_path} for {wait:g} s "
                          "(PIPELINE_GRU_BUILD_WAIT_S); the GRU's CPU training path runs its gates as PyTorch ops, "
                          "about a fifth slower", stacklevel=2)
            return None
        with lock:
            return _import_built(folder) or _build(folder)  # imported: built by the process we waited for
    except Exception as e:  # noqa: BLE001 -- any build failure means: run the gates as PyTorch ops
        warnings.warn(f"pipeline.gru: fused gate kernels unavailable ({type(e).__name__}: {str(e)[:300]}); "
                      "the GRU's CPU training path runs its gates as PyTorch ops, about a fifth slower", stacklevel=2)
        return None


class _Layer(torch.autograd.Function):
    """One GRU layer over a (T, B, I) sequence, PyTorch's gate equations (n uses r * (W_hn h + b_hn)).

    Each step is one matrix product and the gate arithmetic each way: gru_gates.cpp's one pass when `kernels`
    is given, else a few PyTorch ops (the backward then takes the gates' local derivatives for all steps at
    once, so that its loop is one product per gate).
    """

    @staticmethod
    def forward(ctx, x, h, w_ih, w_hh, b_ih, b_hh, times_w, times_wt, kernels):
        T, B, _ = x.shape
        H = h.size(1)
        gi = torch.addmm(b_ih, x.reshape(T * B, -1), w_ih.t()).view(T, B, 3 * H)  # input side, all steps at once
        gi[:, :, :2 * H] += b_hh[:2 * H]  # r and z take both biases as a sum; b_hn stays inside r * (...)
        b_n = torch.cat([b_hh.new_zeros(2 * H), b_hh[2 * H:]])
        ghn = x.new_empty(T, B, H)     # W_hn h + b_hn, the part r scales
        rz = x.new_empty(T, B, 2 * H)  # r and z after the sigmoid
        n = x.new_empty(T, B, H)
        hs = x.new_empty(T + 1, B, H)
        hs[0] = h
        step = kernels.forward if kernels else _torch_forward
        for t, (gi_t, rz_t, ghn_t, n_t) in enumerate(zip(gi, rz, ghn, n)):
            step(gi_t, times_w(hs[t], b_n), hs[t], rz_t, ghn_t, n_t, hs[t + 1])
        ctx.save_for_backward(x, w_ih, hs, ghn, rz, n)
        ctx.times_wt, ctx.kernels = times_wt, kernels
        return hs[1:], hs[T].clone()

    @staticmethod
    def backward(ctx, d_out, d_last):
        x, w_ih, hs, ghn, rz, n = ctx.saved_tensors
        T, B, H = d_out.size(0), d_out.size(1), hs.size(2)
        d_gh = d_out.new_empty(T, B, 3 * H)  # gradients of the gate pre-activations, recurrent side
        d_gin = d_out.new_empty(T, B, H)     # input side of the n gate (r and z are the same on both sides)
        d_out = d_out.contiguous()
        if ctx.kernels:
            g, carry = d_last.contiguous(), torch.zeros_like(d_last)  # dh = g + carry + d_out[t]
            for t in reversed(range(T)):
                ctx.kernels.backward(g, carry, d_out[t], rz[t], n[t], ghn[t], hs[t], d_gh[t], d_gin[t])
                g = ctx.times_wt(d_gh[t])
            dh = g + carry
        else:
            r, z = rz[:, :, :H], rz[:, :, H:]
            f_n = (1 - z) * (1 - n * n)                 # d h'/d n-preactivation, per unit of d h'
            f_r = ghn * r * (1 - r)                     # d n-preactivation/d r-preactivation, per unit of it
            f_z = (hs[:-1] - n) * z * (1 - z)           # d h'/d z-preactivation
            dh = d_out[T - 1] + d_last
            for t in reversed(range(T)):
                if t < T - 1:
                    dh += d_out[t]
                torch.mul(dh, f_n[t], out=d_gin[t])
                torch.mul(d_gin[t], r[t], out=d_gh[t, :, 2 * H:])
                torch.mul(d_gin[t], f_r[t], out=d_gh[t, :, :H])
                torch.mul(dh, f_z[t], out=d_gh[t, :, H:2 * H])
                dh = torch.addcmul(ctx.times_wt(d_gh[t]), dh, z[t])  # d_gh W_hh + z dh
        # every weight gradient is one large matmul over all batch x time rows
        d_w_hh = d_gh.view(T * B, 3 * H).t() @ hs[:-1].reshape(T * B, H)
        d_b_hh = d_gh.view(T * B, 3 * H).sum(0)
        d_gi = d_gh
        d_gi[:, :, 2 * H:] = d_gin  # reuse the buffer: now the input side
        d_gi2 = d_gi.view(T * B, 3 * H)
        dx = (d_gi2 @ w_ih).view(T, B, -1) if ctx.needs_input_grad[0] else None
        return dx, dh, d_gi2.t() @ x.reshape(T * B, -1), d_w_hh, d_gi2.sum(0), d_b_hh, None, None, None


class GRU(nn.GRU):
    """Drop-in nn.GRU (unidirectional, with biases) whose CPU path is _Layer; CUDA runs nn.GRU's cuDNN."""

    def _products(self, k: int, rows: int) -> tuple[_Times, _Times]:
        """Layer k's recurrent products, h @ W_hh^T forward and d @ W_hh backward; prepared again only when the
        weight has changed (an optimizer step, a load), not at every batch of an evaluation. A weight that is
        not the module's own parameter (swapped in by torch.func.functional_call, e.g. with DropConnect) is
        prepared every call: its memory may be reused."""
        w = getattr(self, f"weight_hh_l{k}")
        if not isinstance(w, nn.Parameter):
            return _Times(w, rows), _Times(w.t(), rows)
        key = (w.data_ptr(), w._version, w.dtype, rows)
        cache = self.__dict__.setdefault("_times_cache", {})
        if cache.get(k, (None,))[0] != key:
            cache[k] = (key, (_Times(w, rows), _Times(w.t(), rows)))
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
                                     getattr(self, f"bias_hh_l{k}"), *self._products(k, seq.size(1)),
                                     gate_kernels() if seq.dtype == torch.float32 else None)
            finals.append(last)
        out = seq.transpose(0, 1) if self.batch_first else seq
        return out, torch.stack(finals)
