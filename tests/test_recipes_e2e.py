"""The docs' `-S` recipes as a user types them: every override README.md and docs/*.md show parses as they say,
and the local-folder recipe, copied verbatim from docs/sources.md, runs through bash and DVC on a folder named
`Pop, Rock/A Hard Day's Night!` (a comma, an apostrophe, a `!`)."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import FIXTURES, ROOT
from tests.dvcrepo import TINY, env, make_repo

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCS = "\n".join(p.read_text() for p in DOC_FILES)  # README.md and docs/*.md, where the recipes live
SOURCES_DOC = (ROOT / "docs" / "sources.md").read_text()  # the local-folder recipe
FOLDER = "Pop, Rock/A Hard Day's Night!"


def readme_recipe() -> str:
    """The one command line of the docs that sets data.local.path to a folder under /music/ named FOLDER."""
    lines = [ln.strip() for ln in DOCS.splitlines()
             if ln.strip().startswith("dvc exp run") and "data.local.path=" in ln and "/music/" in ln]
    assert len(lines) == 1, lines
    assert lines[0] in SOURCES_DOC  # documented where the local source is
    words = shlex.split(lines[0])
    assert f"data.local.path=\"/music/{FOLDER}\"" in words, words  # the shell hands Hydra the quoted path
    return lines[0]


def readme_overrides() -> list[str]:
    """Every `-S` value README.md and docs/*.md show, as the shell passes it to DVC."""
    out = []
    for text in (p.read_text() for p in DOC_FILES):  # file by file, so no code span straddles two files
        for span in re.findall(r"`([^`\n]*-S [^`\n]*)`", text) + [
                ln for ln in text.splitlines() if ln.lstrip().startswith("dvc exp run")]:
            words = shlex.split(span)
            out += [w for prev, w in zip(words, words[1:]) if prev == "-S"]
    return out


def test_every_readme_override_parses_and_only_the_lr_recipe_sweeps():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    overrides = readme_overrides()
    assert any(o.startswith("data.local.path=") for o in overrides)
    for text in overrides:
        (o,) = parser.parse_overrides([text])
        if o.key_or_group == "train.lr":
            assert o.is_sweep_override(), text
        else:
            assert not o.is_sweep_override(), text
        if o.key_or_group == "data.local.path":
            assert o.value() in ("/path/to/midi", f"/music/{FOLDER}"), text
        if o.key_or_group == "data.sources":
            assert isinstance(o.value(), list), text


@pytest.mark.slow
def test_the_readme_local_folder_recipe_runs_on_a_folder_named_like_a_real_one(tmp_path):
    music = tmp_path / "music"
    folder = music / FOLDER
    folder.mkdir(parents=True)
    names = ["AlnwickCastle.mid", "AprilWaltz.mid"]
    for name in names:
        shutil.copy2(FIXTURES / "folk" / name, folder / name)
    assert re.fullmatch(r"[\w./-]+", str(music)), music  # so the plain substitution below needs no quoting
    recipe = readme_recipe().replace("/music/", f"{music}/")
    repo = make_repo(tmp_path / "repo", TINY)

    # history expansion on, as in an interactive bash, where a `!` in double quotes would be an "event"
    proc = subprocess.run(["bash", "-c", f"set -o history -H\n{recipe} acquire@local"], cwd=repo, env=env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{recipe}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Running stage 'acquire@local'" in proc.stdout

    data = yaml.safe_load((repo / "params.yaml").read_text())["data"]
    assert data["local"]["path"] == str(folder)  # the exact path: no sweep, no dropped quote or escape
    assert data["sources"] == ["local"]
    manifest = pq.read_table(repo / "data/raw/local/manifest.parquet", columns=["source", "member"]).to_pylist()
    assert sorted(r["member"] for r in manifest) == names
    assert {r["source"] for r in manifest} == {"local"}
