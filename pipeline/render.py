"""Stage `render`: the samples as WAV through FluidSynth and a General MIDI SoundFont, so they can be heard.

Optional by design: without the `fluidsynth` program or the SoundFont (Debian: `apt install fluidsynth
fluid-soundfont-gm`) the stage says so and writes an index that records why nothing was rendered, and the
report shows the pictures and MIDI links alone. After installing them, `dvc repro -f render` renders.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from tqdm import tqdm

from pipeline import params as P
from pipeline.atomic import atomic_path, write_json
from pipeline.cli import run_stage
from pipeline.paths import AUDIO, SAMPLE_INDEX, SAMPLES

INSTALL = "install FluidSynth and a GM SoundFont (Debian/Ubuntu: apt install fluidsynth fluid-soundfont-gm)"


def missing(soundfont: Path) -> str | None:
    """Why rendering is impossible here, or None."""
    if shutil.which("fluidsynth") is None:
        return f"the fluidsynth program is not on PATH: {INSTALL}"
    if not soundfont.is_file():
        return (f"the SoundFont {soundfont} (render.soundfont) does not exist: {INSTALL}, "
                "or point render.soundfont at one")
    return None


def render(midi: Path, wav: Path, soundfont: Path, sample_rate: int) -> None:
    cmd = ["fluidsynth", "-q", "-n", "-i", "-g", "0.8", "-r", str(sample_rate), "-T", "wav", "-F", str(wav),
           str(soundfont), str(midi)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not wav.is_file() or wav.stat().st_size <= 44:
        raise RuntimeError(f"fluidsynth failed on {midi.name} ({proc.returncode}): {proc.stderr.strip()[-500:]}")


def main() -> None:
    start = time.perf_counter()
    p = P.load()
    soundfont = Path(p.render.soundfont)
    samples = json.loads(SAMPLE_INDEX.read_text())["samples"]
    why = missing(soundfont)
    with atomic_path(AUDIO) as tmp:
        tmp.mkdir(parents=True)
        rendered = {}
        if why is None:
            for s in tqdm([s for s in samples if s["midi"]], desc="render", unit="sample", mininterval=1):
                wav = f"{s['name']}.wav"
                render(SAMPLES / s["midi"], tmp / wav, soundfont, p.render.sample_rate)
                rendered[s["name"]] = wav
        write_json(tmp / "index.json", {"rendered": why is None, "reason": why, "files": rendered,
                                        "soundfont": soundfont.name, "sample_rate": p.render.sample_rate})
    if why:
        print(f"render: skipped: {why} (the reason is recorded in {AUDIO / 'index.json'})")
    else:
        print(f"render: {len(rendered)} of {len(samples)} samples rendered to WAV "
              f"({len(samples) - len(rendered)} without notes) in {time.perf_counter() - start:.0f} s -> {AUDIO}")


if __name__ == "__main__":
    run_stage(main)
