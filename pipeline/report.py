"""Stage `report`: one HTML page to look at and listen to every sample, beside the run's key figures.

`data/report.html` links the pictures, WAVs and MIDI files by relative paths (data/samples, data/audio, and
evaluate's metrics/music_distributions.png), so it opens from the workspace with no server. A line at the top says
whether every picture and recording actually loaded in the browser, so a missing `dvc pull` shows.
"""
from __future__ import annotations

import json
from html import escape

from pipeline.atomic import write_bytes
from pipeline.cli import run_stage
from pipeline.paths import AUDIO, EVAL, REPORT, SAMPLE_INDEX

# evaluate's histograms, linked relative to data/report.html like the samples, so the page's check counts it
MUSIC_PNG = "../metrics/music_distributions.png"
PREDICTORS = ("model", "model_tuned", "repeat_last", "pitch_frequency", "pitch_frequency_tuned")
COLUMNS = (("f1", "F1"), ("f1_macro", "macro F1"), ("onset_f1", "onset F1"), ("accuracy", "accuracy"),
           ("nll_per_frame", "NLL/frame"), ("density_pred", "density"), ("density_true", "true density"))

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}.lost{background:#fdd}.sample{border:1px solid #ddd;padding:1em;
margin:1em 0}.sample img,img.figure{max-width:100%}.muted{color:#777}#media-status{font-weight:bold}"""

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


def sample_card(s: dict, audio: dict) -> str:
    seed = (f"seed: {s['seed_frames']} frames of <code>{escape(s['seed_from'])}</code> from frame "
            f"{s['seed_start_frame']}" if s["seed_notes"] else "seed: silence")
    parts = [f"<div class='sample' id='{escape(s['name'])}'><h3>{escape(s['name'])}</h3><p>{seed}; generated "
             f"{s['generated_frames']} frames, {s['generated_notes']} notes</p>",
             f"<img src='samples/{escape(s['png'])}' alt='piano roll of {escape(s['name'])}'>"]
    if s["midi"] is None:
        parts.append("<p class='muted'>The model generated no notes: no MIDI file, nothing to play.</p>")
    else:
        if s["name"] in audio["files"]:
            parts.append(f"<p><audio controls preload='metadata' src='audio/{escape(audio['files'][s['name']])}'>"
                         "</audio></p>")
        parts.append(f"<p><a href='samples/{escape(s['midi'])}' download>MIDI</a> (track 'seed', then 'generated')</p>")
    return "".join(parts) + "</div>"


def build(ev: dict, samples: dict, audio: dict) -> str:
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
{_num(samples['threshold'])}, prime: {escape(samples['prime'])}. Blue: the seed; red: what the model wrote.</p>
{audio_note}{''.join(sample_card(s, audio) for s in samples['samples'])}
{CHECK}
</body></html>
"""


def main() -> None:
    for path in (EVAL, SAMPLE_INDEX, AUDIO / "index.json"):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `dvc repro` first")
    html = build(json.loads(EVAL.read_text()), json.loads(SAMPLE_INDEX.read_text()),
                 json.loads((AUDIO / "index.json").read_text()))
    write_bytes(REPORT, html.encode())
    print(f"report: {REPORT} (open it in a browser)")


if __name__ == "__main__":
    run_stage(main)
