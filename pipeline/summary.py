"""One-line summary of a finished run, printed by `make repro`."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    path = Path("metrics/eval.json")
    if not path.exists():
        sys.exit("no metrics/eval.json yet: run `dvc repro`")
    r = json.loads(path.read_text())
    for protocol in ("next_frame", "continuation"):
        m, b = r[protocol]["model"], r[protocol]["repeat_last"]
        verdict = "beats" if m["f1"] > b["f1"] else "does NOT beat"
        print(f"{protocol:>12}: F1 {m['f1']:.3f} (repeat-last {b['f1']:.3f}, model {verdict} it) | "
              f"density predicted {m['density_pred']:.2f} vs true {m['density_true']:.2f} notes/frame | "
              f"NLL {m['nll_per_frame']:.2f} nats/frame (repeat-last {b['nll_per_frame']:.2f})")


if __name__ == "__main__":
    main()
