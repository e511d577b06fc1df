"""Stage `report`: one HTML page to look at and listen to every sample, beside the run's key figures.

`data/report.html` links the pictures, WAVs and MIDI files by relative paths (data/samples, data/audio, and
evaluate's metrics/music_distributions.png), so it opens from the workspace with no server. A line at the top says
whether every picture and recording actually loaded in the browser, so a missing `dvc pull` shows.

Every sample with notes also plays in the page itself, with or without recordings: its notes (generate's
notes/sample_NNN.json) and its picture's plot area are embedded as JSON, and pipeline/report_player.js, inlined,
plays them with the browser's Web Audio while a cursor runs over the picture.
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path

from pipeline.atomic import write_bytes
from pipeline.cli import run_stage
from pipeline.paths import AUDIO, EVAL, REPORT, SAMPLE_INDEX, SAMPLES

PLAYER = Path(__file__).with_name("report_player.js")

# evaluate's histograms, linked relative to data/report.html like the samples, so the page's check counts it
MUSIC_PNG = "../metrics/music_distributions.png"
PREDICTORS = ("model", "model_tuned", "repeat_last", "pitch_frequency", "pitch_frequency_tuned")
COLUMNS = (("f1", "F1"), ("f1_macro", "macro F1"), ("onset_f1", "onset F1"), ("accuracy", "accuracy"),
           ("nll_per_frame", "NLL/frame"), ("density_pred", "density"), ("density_true", "true density"))

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}.lost{background:#fdd}.sample{border:1px solid #ddd;padding:1em;
margin:1em 0}.sample img,img.figure{max-width:100%}.muted{color:#777}#media-status{font-weight:bold}
.roll{position:relative;display:inline-block;max-width:100%}.roll img{display:block}.cursor{position:absolute;
width:2px;margin-left:-1px;pointer-events:none}.cursor.seed{background:#3b6fb6}.cursor.generated{background:#d9472b}
.play-status{color:#555;margin-left:.5em}"""

# Counts the pictures and recordings that loaded, so a person (or a headless browser) sees at once if any broke.
CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images], auds = [...document.querySelectorAll('audio')];
  const okImg = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const done = () => {
    const okAud = auds.filter(a => a.readyState >= 1 && a.duration > 0).length;
    const s = document.getElementById('media-status');
    s.textContent = `${okImg} of ${imgs.length} pictures and ${okAud} of ${auds.length} recordings loaded`;
    s.dataset.ok = String(okImg === imgs.length && okAud === auds.length);
  };
  let left = auds.length;
  if (!left) return done();
  auds.forEach(a => {
    if (a.readyState >= 1) { if (--left === 0) done(); return; }
    const one = () => { if (--left === 0) done(); };
    a.addEventListener('loadedmetadata', one, {once: true});
    a.addEventListener('error', one, {once: true});
    a.load();
  });
});
</script>"""


def _num(v) -> str:
    return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def prediction_tables(ev: dict) -> str:
    out = []
    for protocol in ("next_frame", "continuation"):
        if protocol not in ev:
            continue
        rows = ev[protocol]
        head = "".join(f"<th>{escape(label)}</th>" for _, label in COLUMNS)
        body = []
        base = rows.get("repeat_last", {})
        for who in PREDICTORS:
            if who not in rows:
                continue
            r = rows[who]
            lost = who.startswith("model") and r["f1"] <= base.get("f1", -1)
            cells = "".join(f"<td>{_num(r.get(key))}</td>" for key, _ in COLUMNS)
            body.append(f"<tr class='{'lost' if lost else ''}'><td>{escape(who)}</td>{cells}</tr>")
        out.append(f"<h3>{escape(protocol)}</h3><table><tr><th>predictor</th>{head}</tr>{''.join(body)}</table>")
    return "".join(out)


def music_table(m: dict) -> str:
    """Means and gap per statistic, and beside them how far the two distributions overlap (`distributions`,
    absent from an eval.json older than it: then –), followed by evaluate's histograms."""
    summary = m.get("distributions", {})
    dist = summary.get("statistics", {})

    def cells(k: str) -> str:
        d = dist.get(k, {})
        return "".join(f"<td>{_num(v)}</td>" for v in (m["generated"][k], m["real"][k], m["gap"][k], d.get("oa"),
                                                       d.get("kl"), d.get("value_oa")))

    rows = "".join(f"<tr><td>{escape(k)}</td>{cells(k)}</tr>" for k in m["generated"])
    return (f"<p>{m['samples']} samples ({m['silent_samples']} without notes) vs {m['real_windows']} real test "
            f"windows of {m['frames']} frames; – = undefined for every sample (or, for OA and KL, for fewer than two "
            "in a set). Generated and real: means. OA and KL compare distributions, after Yang &amp; Lerch (2020): "
            "OA is the overlap of the densities of the generated-to-real and real-to-real distances (1: the samples "
            "sit as close to real music as real pieces to each other; 0: apart), KL = KL(real-to-real ‖ "
            "generated-to-real) in nats (0 best; 20 and more: the two do not overlap at all); value OA is the overlap "
            f"of the two histograms below (their kernel densities). Mean OA {_num(summary.get('mean_oa'))}, mean value "
            f"OA {_num(summary.get('mean_value_oa'))}.</p><table><tr><th>statistic</th>"
            f"<th>generated</th><th>real</th><th>gap</th><th>OA</th><th>KL</th><th>value OA</th></tr>{rows}</table>"
            f"<img class='figure' src='{MUSIC_PNG}' alt='histograms of each music statistic, real vs generated'>")


def player_data(s: dict, notes: dict) -> dict:
    """What the page's player needs of a sample: generate's notes (columns as in its notes JSON), the picture's
    plot area (fractions of the PNG from its top-left) and the seed's and the whole sample's length in seconds."""
    spf = notes["seconds_per_frame"]
    return {"area": s["png_plot_area"], "seed_seconds": s["seed_frames"] * spf,
            "total_seconds": (s["seed_frames"] + s["generated_frames"]) * spf,
            "drum_classes": notes["drum_classes"], "notes": notes["notes"]}


def embedded_json(data: dict) -> str:
    """`data` as JSON that can sit inside a <script> element: no '<', so no '</script>' can end it early."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True).replace("<", "\\u003c")


def player(s: dict, notes: dict) -> str:
    """The play button, its status line and the sample's notes; '' for a sample without a note to play."""
    n = len(notes["notes"])
    if not n:
        return ""
    data = embedded_json(player_data(s, notes))
    return (f"<p class='player'><button type='button' class='play'>▶ play</button><span class='play-status' "
            f"data-state='idle' data-notes='{n}' data-scheduled='0'>{n} notes, played by your browser</span></p>"
            f"<script type='application/json' class='notes'>{data}</script>")


def sample_card(s: dict, audio: dict, notes: dict) -> str:
    seed = (f"seed: {s['seed_frames']} frames of <code>{escape(s['seed_from'])}</code> from frame "
            f"{s['seed_start_frame']}" if s["seed_notes"] else "seed: silence")
    parts = [f"<div class='sample' id='{escape(s['name'])}'><h3>{escape(s['name'])}</h3><p>{seed}; generated "
             f"{s['generated_frames']} frames, {s['generated_notes']} notes</p>",
             f"<div class='roll'><img src='samples/{escape(s['png'])}' alt='piano roll of {escape(s['name'])}'>"
             "<div class='cursor' hidden></div></div>", player(s, notes)]
    if s["midi"] is None:
        parts.append("<p class='muted'>The model generated no notes: no MIDI file"
                     + ("; the player plays the seed alone.</p>" if notes["notes"] else ", nothing to play.</p>"))
    else:
        if s["name"] in audio["files"]:
            parts.append(f"<p><audio controls preload='metadata' src='audio/{escape(audio['files'][s['name']])}'>"
                         "</audio> FluidSynth's recording</p>")
        parts.append(f"<p><a href='samples/{escape(s['midi'])}' download>MIDI</a> (track 'seed', then 'generated')</p>")
    return "".join(parts) + "</div>"


def trained_keys(keys: dict) -> str:
    """What the pictures' rows cover, from generate's record of the keys the training data sounds."""
    out = []
    if keys["lowest_pitch"] is not None:
        out.append(f"pitches {keys['lowest_name']} to {keys['highest_name']} (MIDI {keys['lowest_pitch']} to "
                   f"{keys['highest_pitch']})")
    if keys["drum_classes"]:
        out.append("the drum classes " + ", ".join(c.replace("_", " ") for c in keys["drum_classes"]))
    return " and ".join(out)


def build(ev: dict, samples: dict, audio: dict, notes: dict[str, dict], player_js: str) -> str:
    """The page: `ev` is metrics/eval.json, `samples` data/samples/index.json, `audio` data/audio/index.json,
    `notes` each sample's notes JSON by name, `player_js` the player's script."""
    thresholds = ev["thresholds"]
    tuned = thresholds["tuned"]
    audio_note = ("" if audio["rendered"] else
                  f"<p class='muted'>No recordings: {escape(audio['reason'] or '')}</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Samples and metrics</title><style>{STYLE}</style></head>
<body>
<h1>Samples and metrics</h1>
<p id="media-status" data-ok="">checking pictures and recordings…</p>
<p>{escape(ev['kind'])}; {ev['test_windows']} test windows of {ev['window_frames']} frames; thresholds: fixed
{thresholds['fixed']}, tuned on valid {_num(tuned)}. Rows in red: the model does not beat repeating the last frame.</p>
<h2>Prediction (test split)</h2>{prediction_tables(ev)}
<h2>Music statistics</h2>{music_table(ev['music'])}
<h2>Samples</h2>
<p>{escape(samples['sampling'])} sampling, temperature {samples['temperature']}, threshold
{_num(samples['threshold'])}, prime: {escape(samples['prime'])}. Blue: the seed; red: what the model wrote. The
pictures show the keys the training data sounds ({escape(trained_keys(samples['trained_keys']))}) and any other a
sample plays; the lines mark beats and bars. ▶ plays a sample's notes with your browser's own synthesizer (no
recording needed): the seed soft, the continuation bright, the cursor blue over the seed and red over the
continuation.</p>
{audio_note}{''.join(sample_card(s, audio, notes[s['name']]) for s in samples['samples'])}
{CHECK}
<script>
{player_js}</script>
</body></html>
"""


def read_notes(index: dict, samples_dir: Path = SAMPLES) -> dict[str, dict]:
    """Each sample's notes JSON (generate's notes/sample_NNN.json) by sample name. Raises FileNotFoundError when
    generate wrote none (an index.json from before the player, or a file missing)."""
    out = {}
    for s in index["samples"]:
        path = samples_dir / s.get("notes", f"notes/{s['name']}.json")
        if "notes" not in s or "png_plot_area" not in s or not path.exists():
            raise FileNotFoundError(f"{path} (or its entry in {samples_dir / 'index.json'}) is missing: written by "
                                    "an older generate; run `dvc repro generate`")
        out[s["name"]] = json.loads(path.read_text())
    return out


def main() -> None:
    for path in (EVAL, SAMPLE_INDEX, AUDIO / "index.json"):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `dvc repro` first")
    samples = json.loads(SAMPLE_INDEX.read_text())
    audio = json.loads((AUDIO / "index.json").read_text())
    html = build(json.loads(EVAL.read_text()), samples, audio, read_notes(samples), PLAYER.read_text())
    write_bytes(REPORT, html.encode())
    rendered = sum(1 for s in samples["samples"] if s["name"] in audio["files"])
    print(f"report: {len(samples['samples'])} samples, each playable in the browser (▶), {rendered} with a "
          f"FluidSynth recording -> {REPORT}")


if __name__ == "__main__":
    run_stage(main)
