"""requirements.lock agrees with pyproject.toml (issue 21): every requirement, extras included, has a pin that
satisfies it, every pin is needed, and the lock was made from today's dependency tables (the digest in its
header). Offline: pyproject.toml, the lock and the installed packages' metadata only."""
from __future__ import annotations

import re
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from tests.lockfile import (
    LOCK,
    PYPROJECT,
    REFRESH,
    agreement_problems,
    closure_problems,
    dependency_tables,
    main,
    parse_lock,
    project_roots,
    read_pyproject,
    stamp,
    tables_digest,
)

HOW = (f"refresh it with `{REFRESH}`, then `make setup`, `dvc repro --force` and compare dvc.lock "
       f"(README.md, 'The lock')")


def _lock():
    return parse_lock(LOCK.read_text())


def test_the_lock_agrees_with_pyproject():
    problems = agreement_problems(read_pyproject(), _lock())
    assert not problems, f"{LOCK.name} does not match pyproject.toml: " + "; ".join(problems) + f". {HOW}"


def test_the_lock_holds_exactly_what_the_project_needs():
    """The graph from pyproject's requirements through each pinned release's own requirements (read from the
    installed metadata, which `make setup` installed from the lock) reaches every pin and only pins."""
    lock = _lock()
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if lock.python != here:
        pytest.skip(f"the lock is resolved for Python {lock.python} (its header); markers differ on {here}")
    mismatched: list[str] = []

    def requires(name: NormalizedName) -> list[Requirement] | None:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return None
        if not SpecifierSet(f"=={lock.pins[name]}").contains(Version(dist.version), prereleases=True):
            mismatched.append(f"{name} {dist.version} is installed, the lock pins {lock.pins[name]}")
        return [Requirement(r) for r in dist.requires or []]

    problems = closure_problems(project_roots(read_pyproject()), lock.pins, requires)
    assert not mismatched, "this environment is not the lock's: " + "; ".join(mismatched) + ". Run `make setup`"
    assert not problems, f"{LOCK.name} does not match pyproject.toml: " + "; ".join(problems) + f". {HOW}"


def test_the_lock_installs_no_cuda_build():
    """torch's pin names no build (pip picks the build its indexes offer, the CPU wheel, as it did before the
    lock) and nothing of the CUDA runtime (NVIDIA's wheels, triton) is pinned: those are gigabytes. NVML's
    bindings, dvclive's GPU metrics reader (a few hundred KB), are no CUDA runtime."""
    pins = _lock().pins
    assert pins[canonicalize_name("torch")].local is None, f"torch=={pins['torch']}: drop the label ({HOW})"
    cuda = sorted(n for n in pins if (n.startswith("nvidia-") and n != "nvidia-ml-py") or n.startswith("triton"))
    assert not cuda, f"the lock pins CUDA runtime packages {cuda}: it was made where pip found a CUDA torch. {HOW}"


# ---- the checks themselves, on changed copies of the real files ------------------------------------------------

def _edited_pyproject(tmp_path, old: str, new: str) -> dict:
    text = PYPROJECT.read_text()
    assert old in text, old
    (tmp_path / "pyproject.toml").write_text(text.replace(old, new, 1))
    return read_pyproject(tmp_path / "pyproject.toml")


def test_a_new_requirement_is_reported_with_the_refresh_command(tmp_path):
    changed = _edited_pyproject(tmp_path, '"tqdm>=4.66",', '"tqdm>=4.66",\n    "rich-argparse>=1",')
    problems = agreement_problems(changed, _lock())
    assert any("dependency tables changed" in p for p in problems)
    assert "rich-argparse>=1 has no pin" in problems


def test_a_range_that_excludes_the_pin_is_reported(tmp_path):
    pin = _lock().pins["numpy"]
    changed = _edited_pyproject(tmp_path, '"numpy>=1.26"', f'"numpy>{pin}"')
    assert f"numpy>{pin} is not satisfied by the pin numpy=={pin}" in agreement_problems(changed, _lock())


def test_a_loosened_range_every_pin_satisfies_still_shows_a_stale_lock(tmp_path):
    """The pins still satisfy `dvc>=3,<4`, but a refresh could now choose differently: only the digest says so."""
    changed = _edited_pyproject(tmp_path, '"dvc>=3.50,<4"', '"dvc>=3,<4"')
    problems = agreement_problems(changed, _lock())
    assert len(problems) == 1 and "dependency tables changed" in problems[0]


def test_the_digest_ignores_order_spacing_and_comments_only(tmp_path):
    base = tables_digest(dependency_tables(read_pyproject()))
    reordered = _edited_pyproject(tmp_path, '    "pyyaml>=6",\n', '    # a comment\n    "pyyaml >= 6" ,\n')
    assert tables_digest(dependency_tables(reordered)) == base
    moved = read_pyproject()
    moved["project"]["dependencies"] = list(reversed(moved["project"]["dependencies"]))
    assert tables_digest(dependency_tables(moved)) == base
    narrowed = _edited_pyproject(tmp_path, '"pyyaml>=6"', '"pyyaml>=6.0.1"')
    assert tables_digest(dependency_tables(narrowed)) != base


def test_a_dropped_dependency_leaves_pins_nothing_requires(tmp_path):
    """datasets out of the dev extra: its pin and the pins only it needs (multiprocess, xxhash, ...) are reported."""
    changed = _edited_pyproject(tmp_path, '\n    "datasets>=5.2,<6",', "")
    lock = _lock()

    def requires(name):
        return [Requirement(r) for r in metadata.distribution(name).requires or []]

    problems = closure_problems(project_roots(changed), lock.pins, requires)
    leftovers = {p.split("==")[0] for p in problems if "nothing in pyproject.toml requires it" in p}
    assert {"datasets", "multiprocess", "xxhash"} <= leftovers
    assert "numpy" not in leftovers and all("nothing in pyproject.toml requires it" in p for p in problems)


def test_extras_and_markers_decide_what_a_pin_pulls_in():
    """A small graph as data: moto[server] needs flask-cors, plain moto does not; a marker for another Python
    pulls in nothing; an unpinned requirement and an unreached pin are both named."""
    deps = {"moto": ["requests", 'flask-cors; extra == "server"'], "requests": ['tomli; python_version < "3"'],
            "flask-cors": [], "left-over": []}
    pins = {canonicalize_name(n): Version("1.0") for n in deps}

    def requires(name):
        return [Requirement(r) for r in deps[name]]

    with_server = closure_problems([(Requirement("moto[server]>=1"), ("server",))], pins, requires)
    assert with_server == ["left-over==1.0 is pinned but nothing in pyproject.toml requires it"]
    plain = closure_problems([(Requirement("moto>=1"), ())], pins, requires)
    assert "flask-cors==1.0 is pinned but nothing in pyproject.toml requires it" in plain
    missing = closure_problems([(Requirement("moto[server]"), ("server",)), (Requirement("mido"), ())], pins,
                               requires)
    assert "mido has no pin" in missing


def test_stamping_drops_build_labels_and_is_read_back(tmp_path):
    compiled = ("#\n# This file is autogenerated by pip-compile with Python 3.11\n# by the following command:\n#\n"
                "#    make lock\n#\ntorch==2.13.0+cpu\n    # via midi-pipeline (pyproject.toml)\nnumpy==2.4.6\n")
    digest = tables_digest(dependency_tables(read_pyproject()))
    once = stamp(compiled, digest)
    assert stamp(once, digest) == once
    lock = parse_lock(once)
    assert lock.digest == digest and lock.python == "3.11"
    assert lock.pins == {"torch": Version("2.13.0"), "numpy": Version("2.4.6")}
    # the command `make lock` runs, on a file
    path = tmp_path / "requirements.lock"
    path.write_text(compiled)
    assert main([str(path), str(PYPROJECT)]) == 0 and path.read_text() == once


@pytest.mark.parametrize("line, error", [("numpy>=2", "not an exact pin"), ("numpy==2.4.6\nNumPy==2.4.6", "twice"),
                                         ("numpy==2.4.6 ; python_version < '3.12'", "not an exact pin")])
def test_a_lock_that_is_not_exact_pins_is_refused(line, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_lock(line + "\n")
