"""Every stage ends by saying what it did: its last line on stdout starts with its name (README, "What the
pipeline does"), and its progress bars stay on stderr so that stdout holds only such lines. The whole pipeline
runs on the fixture files with tiny params, each stage's `main()` as `dvc repro` would call it."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import yaml

from pipeline.params import PROJECT_PARAMS
from tests.conftest import ROOT
from tests.dvcrepo import TINY, overlay

# (the name its closing line starts with, its module under pipeline/, arguments, a path the line names: where the
# output went, or None where the stage's line does not name one yet)
STAGES = [
    ("acquire local", "acquire", (["local"],), "data/raw/local"),
    ("prepare", "prepare", (), "data/prepared"),
    ("convert", "convert", (), "data/processed/pianoroll"),
    ("train", "train", (), "models/model.pt"),
    ("calibrate", "calibrate", (), "models/calibration.json"),
    ("generate", "generate", (), "data/samples"),
    ("evaluate", "evaluate", (), "metrics/eval.json"),
    ("render", "render", (), "data/audio"),
    ("report", "report", (), "data/report.html"),
]
# Run in a process of their own, as `python -m pipeline.report`: the one stage whose main is also checked that way
OWN_PROCESS = {"report"}


def _stdout(module: str, args: tuple, capsys) -> str:
    if module in OWN_PROCESS:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        return subprocess.run([sys.executable, "-m", f"pipeline.{module}", *[a for group in args for a in group]],
                              capture_output=True, text=True, check=True, env=env).stdout
    importlib.import_module(f"pipeline.{module}").main(*args)
    return capsys.readouterr().out


def test_every_stage_ends_with_a_closing_line_naming_what_it_wrote(midi_folder, tmp_path, monkeypatch, capsys):
    params = overlay(yaml.safe_load(PROJECT_PARAMS.read_text()), overlay(TINY, {
        "data": {"sources": ["local"], "local": {"path": str(midi_folder)}},
        "prepare": {"workers": 1}, "generate": {"n_samples": 2, "length": 2}}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_GRU_KERNELS", "0")  # the PyTorch-ops gates: no minute-long build on a fresh machine
    for name, module, args, output in STAGES:
        out = _stdout(module, args, capsys)
        lines = out.splitlines()
        assert lines, f"{name} printed nothing on stdout"
        assert lines[-1].startswith(f"{name}: "), f"{name}'s last line on stdout is not its closing line:\n{out}"
        assert output is None or output in lines[-1], f"{name}'s closing line does not name {output}: {lines[-1]}"
        assert "\r" not in out and "%|" not in out, f"{name} drew a progress bar on stdout:\n{out!r}"
