"""One-line summary per protocol of a finished run, printed by `make repro`."""
from __future__ import annotations

import json
import sys

from pipeline.paths import EVAL, REPORT


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def lines(r: dict) -> list[str]:
    out = []
    for protocol in ("next_frame", "continuation"):
        if protocol not in r:
            continue
        m, b = r[protocol]["model"], r[protocol]["repeat_last"]
        verdict = "beats" if m["f1"] > b["f1"] else "does NOT beat"
        nll = (f"NLL {m['nll_per_frame']:.2f} nats/frame (repeat-last {b['nll_per_frame']:.2f})"
               if m.get("nll_per_frame") is not None else f"repeat-last NLL {b['nll_per_frame']:.2f} nats/frame")
        out.append(f"{protocol:>12}: F1 {m['f1']:.3f} (repeat-last {b['f1']:.3f}, model {verdict} it) | "
                   f"density predicted {m['density_pred']:.2f} vs true {m['density_true']:.2f} notes/frame | {nll}")
    t = r.get("thresholds", {})
    if t.get("tuned") is not None and "model_tuned" in r.get("next_frame", {}):
        out.append(f"{'tuned':>12}: threshold {t['tuned']:.3f} (best valid F1 {t['tuned_valid_f1']:.3f}): "
                   f"next-frame F1 {r['next_frame']['model_tuned']['f1']:.3f}, "
                   f"continuation F1 {r['continuation']['model_tuned']['f1']:.3f}")
    if "music" in r:
        m = r["music"]
        shown = [(k, m["generated"][k], m["real"][k]) for k in ("notes", "pitches_used", "pitch_class_entropy",
                 "polyphony", "empty_beat_rate", "groove_consistency")]
        pairs = ", ".join(f"{k} {_f(g)} vs {_f(v)}" for k, g, v in shown)
        out.append(f"{'music':>12}: generated vs real ({m['samples']} samples, {m['silent_samples']} silent): {pairs}")
        if "distributions" in m:
            out.append(f"{'':>12}  distributions overlap (Yang & Lerch OA, 1 = the same): values "
                       f"{_f(m['distributions']['mean_value_oa'])}, relative {_f(m['distributions']['mean_oa'])}")
    if "next_token" in r:
        m, u = r["next_token"]["model"], r["next_token"]["unigram"]
        out.append(f"{'next_token':>12}: NLL {m['nll_per_token']:.3f} nats/token, accuracy {m['accuracy']:.3f} "
                   f"(unigram {u['nll_per_token']:.3f}, {u['accuracy']:.3f})")
    return out


def main() -> None:
    path = EVAL
    if not path.exists():
        sys.exit("no metrics/eval.json yet: run `dvc repro`")
    print("\n".join(lines(json.loads(path.read_text()))))
    if REPORT.exists():
        print(f"{'report':>12}: open data/report.html in a browser (every sample plays there; pictures, MIDI, WAVs)")


if __name__ == "__main__":
    main()
