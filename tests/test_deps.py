"""dvc.yaml's code dependencies cannot drift from the code.

For each stage, the pipeline files its `python -m pipeline.X` imports (statically, transitively, lazy imports
inside functions included, `if TYPE_CHECKING:` blocks excluded), plus the non-Python files those modules read
next to themselves (gru.py compiles gru_gates.cpp), must be exactly the stage's `deps:` entries under pipeline/.
A module imported but not listed is a stale-cache risk (DVC would not rerun the stage when it changes); a file
listed but never imported is a needless rerun. A folder dep covers its files only where .dvcignore keeps DVC
from hashing the __pycache__ Python writes into it. Everything is computed from dvc.yaml and the files; the only
hand-kept list is EXEMPT below. A failure prints, per stage, the lines to add to and remove from its deps.
"""
from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pipeline"


@dataclass(frozen=True)
class Exemption:
    why: str
    # the pipeline files the exempt module may import. An exempt module's imports are not followed, so a new
    # import into it could carry computation into every stage unseen: it fails test_exempt_modules_reach_no_further
    # and has to be judged (and added here, with the reason it cannot change an output) first.
    reach: frozenset[str]


# Plumbing that cannot change the bytes of any output. Not listed in a stage's deps (listing it is reported as
# extra) and not followed. What is NOT exempt, and why:
#   atomic.py: how outputs are written is part of the outputs. write_json fixes their JSON text (indent=2,
#     sort_keys) and write_parquet their compression (zstd); DVC hashes those bytes, downstream stages hash them
#     again, and a fresh `dvc repro` must reproduce dvc.lock byte for byte. A change there must rerun.
#   http.py: how acquire fetches its inputs (headers, redirects, resumed .part files) decides the bytes that
#     come in, and bitmidi's pages carry no checksum to catch a difference.
#   runtime.py, parallel.py: seeds, threads, devices and work order all reach the numbers.
EXEMPT: dict[str, Exemption] = {
    "pipeline/params.py": Exemption(
        why="what it hands a stage is params.yaml's values, which the stage's `params:` entries track; its "
            "validators only accept or reject (a change can make a run fail, never change an output), and the "
            "schema holds no defaults (params.yaml is the one source: a missing key is an error). gm is imported "
            "to validate filter.instruments, near_duplicates for the shortest shingle dedupe.near.intervals "
            "allows (MIN_DISTINCT), the source registry for each source's params model; params.py "
            "never lists a source's entries. (Left open: a schema type change, int to float say, could change "
            "a value's type; too thin to rerun every stage on each edit of the schema.)",
        reach=frozenset({"pipeline/gm.py", "pipeline/near_duplicates.py", "pipeline/schema.py",
                         "pipeline/sources/base.py", "pipeline/sources/registry.py"})),
    "pipeline/cli.py": Exemption(
        why="run_stage calls the stage's main and only turns the expected exceptions into a one-line `error:`; "
            "a stage that succeeds never sees it, and a failed stage records no output",
        reach=frozenset({"pipeline/params.py"})),
}
# Also exempt, computed rather than listed: a module with no code (a docstring and `from __future__` at most;
# today pipeline/__init__.py and pipeline/sources/__init__.py). Python runs it on import, but it cannot change
# an output; once it holds code it is a dependency like any other.


# ---- the import closure ---------------------------------------------------------------------------------------

def rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def module_file(name: str, root: Path) -> Path | None:
    """pipeline.a.b -> root/pipeline/a/b.py or root/pipeline/a/b/__init__.py (None: not a module of ours)."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """Every module name a file imports, wherever the import statement is (functions and methods included),
    except under `if TYPE_CHECKING:` (its `else:` branch still runs)."""

    def __init__(self, package: str):
        self.package = package  # the importing module's package, for relative imports
        self.names: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update(a.name for a in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            base = parts[:len(parts) - (node.level - 1)] if node.level - 1 < len(parts) else []
            base = ".".join(base + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        self.names.add(base)
        # `from pipeline import gm`: gm may be a submodule; module_file() decides, a plain attribute resolves to none
        self.names.update(f"{base}.{a.name}" for a in node.names if a.name != "*")

    def visit_Call(self, node: ast.Call) -> None:
        # importlib.import_module("pipeline.x") and __import__("pipeline.x") with a literal name
        f = node.func
        fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if fname in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            self.names.add(node.args[0].value)
        self.generic_visit(node)


@cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def has_code(path: Path) -> bool:
    """False for a module that is a docstring and `from __future__` imports at most."""
    for i, stmt in enumerate(_parse(path).body):
        if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                and isinstance(stmt.value.value, str):
            continue
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            continue
        return True
    return False


def imported_files(path: Path, root: Path) -> set[Path]:
    """The package's files that importing `path` runs directly: every imported module and, as Python runs
    them first, each one's parent packages' __init__.py."""
    name = module_name(path, root)
    visitor = _Imports(name if path.name == "__init__.py" else name.rpartition(".")[0])
    visitor.visit(_parse(path))
    out = set()
    for full in visitor.names | {name}:
        parts = full.split(".")
        if parts[0] != PACKAGE:
            continue
        for i in range(1, len(parts) + 1):
            f = module_file(".".join(parts[:i]), root)
            if f is not None:
                out.add(f)
    out.discard(path)
    return out


@cache
def resource_files(path: Path, root: Path) -> frozenset[Path]:
    """Non-Python files of the package that a module names in a string literal, next to itself
    (`Path(__file__).with_name("gru_gates.cpp")`, `Path(__file__).parent / "x.json"`) or from the root
    ("pipeline/x.json"): what it reads besides code. test_every_package_resource_has_a_reader keeps this honest."""
    out = set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value \
                and "\n" not in node.value and len(node.value) < 200:
            for base in (path.parent, root):
                try:
                    f = (base / node.value).resolve()
                except (OSError, ValueError):
                    continue
                if f.is_file() and f.suffix != ".py" and f.is_relative_to(root / PACKAGE) \
                        and "__pycache__" not in f.parts:
                    out.add(f)
    return frozenset(out)


def package_resources(root: Path) -> set[Path]:
    return {p for p in (root / PACKAGE).rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}


@cache
def closure(module: str, root: Path = ROOT) -> frozenset[str]:
    """The files (relative to root) that running `python -m module` depends on: the modules it imports,
    transitively, and the resources they read; without the exempt modules (not followed) and code-less ones."""
    start = module_file(module, root)
    if start is None:
        raise ValueError(f"no module {module} under {root}")
    todo = {start} | imported_files(start, root)
    seen: set[Path] = set()
    out: set[str] = set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        if rel(f, root) in EXEMPT:
            continue
        if f.suffix != ".py":
            out.add(rel(f, root))
            continue
        if has_code(f):
            out.add(rel(f, root))
        todo |= imported_files(f, root) | resource_files(f, root)
    return frozenset(out)


# ---- dvc.yaml's side ------------------------------------------------------------------------------------------

_MODULE = re.compile(r"(?:^|\s)-m\s+(\S+)")               # python -m pipeline.x
_SCRIPT = re.compile(r"(?:^|\s)(?:\./)?(\S+)\.py(?=\s|$)")  # python pipeline/x.py


def stage_modules(stage: dict) -> set[str]:
    """The pipeline modules a stage's cmd runs (a foreach/matrix stage's cmd is its template's). A stage that
    runs none must list no pipeline code."""
    body = stage.get("do", stage)
    cmds = body.get("cmd", [])
    out = set()
    for cmd in [cmds] if isinstance(cmds, str) else cmds:
        for m in _MODULE.findall(cmd) + [p.replace("/", ".") for p in _SCRIPT.findall(cmd)]:
            if m.split(".")[0] == PACKAGE:
                if "${" in m:
                    raise ValueError(f"cannot check an interpolated module: {cmd!r}")
                out.add(m)
    return out


def bytecode_is_ignored(folder: str, root: Path) -> bool:
    """Whether DVC skips the __pycache__ Python writes into `folder` (by .dvcignore). DVC hashes everything
    under a folder dep that .dvcignore does not exclude, so an un-ignored __pycache__ changes the folder's hash
    whenever any process imports a module from it (any stage that loads params imports sources.music21_corpus)."""
    import pathspec

    ignore = root / ".dvcignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    try:
        spec = pathspec.PathSpec.from_lines("gitignore", lines)
    except LookupError:  # pathspec < 0.12 knows only the older name
        spec = pathspec.PathSpec.from_lines("gitwildmatch", lines)
    return spec.match_file(f"{folder}/__pycache__/m.cpython-3.pyc")


def listed_files(stage: dict, root: Path) -> tuple[set[str], dict[str, str], set[str]]:
    """The pipeline files a stage's deps name: files, and folders' files (a folder covers every file under it,
    provided DVC ignores the bytecode Python writes into it). Returns (files, {file: the folder it came
    through}, folders that cover nothing because their __pycache__ would be hashed too)."""
    body = stage.get("do", stage)
    files, via, unsafe = set(), {}, set()
    for dep in body.get("deps", []):
        dep = str(dep).rstrip("/")
        if dep != PACKAGE and not dep.startswith(PACKAGE + "/"):
            continue
        if "${" in dep:
            raise ValueError(f"cannot check an interpolated dependency: {dep!r}")
        path = root / dep
        if path.is_dir() and not bytecode_is_ignored(dep, root):
            unsafe.add(dep)
        elif path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                    files.add(rel(f, root))
                    via[rel(f, root)] = dep
        else:
            files.add(dep)  # a listed file that does not exist is extra, reported below
    return files, via, unsafe


def needed(stage: dict, root: Path = ROOT) -> set[str]:
    """What a stage's code deps must be: the closures of the modules it runs."""
    return set().union(*(closure(m, root) for m in stage_modules(stage)))


@dataclass
class Drift:
    missing: list[str]         # imported (or read) and not listed: a stale-cache risk
    extra: list[str]           # listed and never imported: a needless rerun
    notes: dict[str, str]      # why an extra entry is extra, where there is more to say


def drift(dvc: dict, root: Path = ROOT) -> dict[str, Drift]:
    """Per stage whose code deps differ from its import closure: what is missing and what is extra."""
    out = {}
    for name, stage in dvc.get("stages", {}).items():
        if "wdir" in stage.get("do", stage):
            raise ValueError(f"stage {name}: wdir is not supported here")
        need = needed(stage, root)
        listed, via, unsafe = listed_files(stage, root)
        missing = sorted(need - listed)
        extra, notes = [], {}
        for f in sorted((listed - need) | unsafe):
            path = root / f
            if f in unsafe:
                notes[f] = ("a folder: DVC would hash the __pycache__ Python writes into it too (.dvcignore does "
                            "not ignore it), so list its files instead")
            elif f in EXEMPT:
                notes[f] = "exempt: " + EXEMPT[f].why
            elif not path.exists():
                notes[f] = "no such file"
            elif f in via and path.suffix == ".py" and not has_code(path):
                continue  # a code-less module inside a listed folder: harmless
            elif f in via:
                notes[f] = f"never imported, but listed through the folder {via[f]}: list the files instead"
            extra.append(f)
        if missing or extra:
            out[name] = Drift(missing, extra, notes)
    return out


def report(found: dict[str, Drift]) -> str:
    lines = ["dvc.yaml's code deps differ from what each stage's module imports (tests/test_deps.py):"]
    for name, d in found.items():
        lines.append(f"  stage {name}:")
        if d.missing:
            lines.append("    missing (imported or read, not listed: a change would not rerun the stage); "
                         "add to its deps:")
            lines += [f"      - {f}" for f in d.missing]
        if d.extra:
            lines.append("    extra (listed, never imported: a change reruns it for nothing); remove from its deps:")
            lines += [f"      - {f}" + (f"    # {d.notes[f]}" if f in d.notes else "") for f in d.extra]
    return "\n".join(lines)


def load_dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


# ---- the tests ------------------------------------------------------------------------------------------------

def test_every_stage_lists_exactly_the_code_it_imports():
    found = drift(load_dvc_yaml())
    if found:
        pytest.fail(report(found), pytrace=False)


def synced(dvc: dict, root: Path = ROOT) -> dict:
    """A copy of dvc.yaml whose stages list exactly their closures (other deps kept): what pasting every fix
    `report` prints makes of it. The tests below break it on purpose, whatever state the real file is in."""
    dvc = copy.deepcopy(dvc)
    for stage in dvc["stages"].values():
        body = stage.get("do", stage)
        other = [d for d in body.get("deps", []) if str(d).rstrip("/") != PACKAGE
                 and not str(d).startswith(PACKAGE + "/")]
        body["deps"] = sorted(needed(stage, root)) + other
    return dvc


def test_pasting_the_reported_fixes_leaves_no_drift():
    assert drift(synced(load_dvc_yaml())) == {}


def test_a_removed_dependency_is_reported_missing():
    """The check fails when any one code dep is dropped from any one stage, and names exactly that file."""
    dvc = synced(load_dvc_yaml())
    cases = [(name, dep) for name, stage in dvc["stages"].items() for dep in stage.get("do", stage)["deps"]
             if dep.startswith(PACKAGE + "/")]
    assert any(dep.endswith(".cpp") for _, dep in cases) and any(dep.endswith(".py") for _, dep in cases)
    for name, dep in cases:
        broken = copy.deepcopy(dvc)
        stage = broken["stages"][name]
        stage.get("do", stage)["deps"].remove(dep)
        found = drift(broken)
        assert list(found) == [name], (name, dep, report(found))
        assert found[name].missing == [dep] and not found[name].extra
        assert f"  stage {name}:" in report(found) and f"      - {dep}" in report(found)


def test_an_unused_or_exempt_dependency_is_reported_extra():
    dvc = synced(load_dvc_yaml())
    need = {name: needed(stage) for name, stage in dvc["stages"].items()}
    name = min(need, key=lambda n: len(need[n]))  # the stage that imports the least
    unused = min(f for f in (rel(p, ROOT) for p in (ROOT / PACKAGE).glob("*.py"))
                 if f not in need[name] and f not in EXEMPT and has_code(ROOT / f))
    stage = dvc["stages"][name]
    stage.get("do", stage)["deps"] += [unused, "pipeline/cli.py", "pipeline/gone.py"]
    found = drift(dvc)
    assert list(found) == [name] and found[name].extra == sorted([unused, "pipeline/cli.py", "pipeline/gone.py"])
    assert found[name].notes["pipeline/cli.py"].startswith("exempt: ")
    assert found[name].notes["pipeline/gone.py"] == "no such file" and unused not in found[name].notes


def test_a_folder_dependency_covers_its_files_once_dvc_ignores_their_bytecode(tmp_path: Path):
    _write(tmp_path, {
        "pipeline/__init__.py": '"""only a docstring"""\n',
        "pipeline/main.py": "from pipeline.src import a\ndef f():\n    from pipeline.src import b\n",
        "pipeline/src/__init__.py": '"""only a docstring"""\n',
        "pipeline/src/a.py": "X = 1\n",
        "pipeline/src/b.py": "X = 1\n",
        "pipeline/other.py": "X = 1\n",
    })
    dvc = {"stages": {"s": {"cmd": "python -m pipeline.main", "deps": ["pipeline/main.py", "pipeline/src"]}}}
    found = drift(dvc, tmp_path)["s"]  # no .dvcignore: the folder's hash would move with its __pycache__
    assert found.missing == ["pipeline/src/a.py", "pipeline/src/b.py"] and found.extra == ["pipeline/src"]
    assert "__pycache__" in found.notes["pipeline/src"]
    (tmp_path / ".dvcignore").write_text("# Python\n__pycache__/\n")
    assert drift(dvc, tmp_path) == {}  # the folder stands for its files (its code-less __init__ is harmless)
    dvc["stages"]["s"]["deps"] = ["pipeline"]
    found = drift(dvc, tmp_path)["s"]
    assert not found.missing and found.extra == ["pipeline/other.py"]
    assert "through the folder pipeline" in found.notes["pipeline/other.py"]


def test_exempt_modules_reach_no_further():
    """An exempt module's imports are not followed; a new one must be judged before it is let through."""
    for f, ex in EXEMPT.items():
        path = ROOT / f
        assert path.is_file(), f"{f} is exempt but does not exist: drop it from EXEMPT"
        reach = {rel(p, ROOT) for p in imported_files(path, ROOT) | resource_files(path, ROOT)
                 if p.suffix != ".py" or has_code(p)}
        assert reach <= ex.reach, (f"{f} now imports {sorted(reach - ex.reach)}: can that change an output? "
                                   f"If not, add it to EXEMPT[{f!r}].reach; if so, {f} is no longer exempt")


def test_every_package_resource_has_a_reader():
    """A non-Python file in the package that no module names would escape the closure: name how it is read."""
    readers = {r for f in (ROOT / PACKAGE).rglob("*.py") for r in resource_files(f, ROOT)}
    unread = sorted(rel(p, ROOT) for p in package_resources(ROOT) - readers)
    assert not unread, (f"{unread}: no module names these files, so no stage's closure holds them; name each where "
                        "it is read (Path(__file__).with_name('x')) or teach resource_files how it is found")
    gru = {rel(p, ROOT) for p in resource_files(ROOT / "pipeline" / "gru.py", ROOT)}
    assert gru == {"pipeline/gru_gates.cpp"}


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_closure_follows_every_form_of_import_and_skips_type_checking(tmp_path: Path):
    _write(tmp_path, {
        "pipeline/__init__.py": '"""only a docstring"""\n',
        "pipeline/main.py": (
            "from __future__ import annotations\n"
            "from typing import TYPE_CHECKING\n"
            "import pipeline.absolute\n"
            "from pipeline import sibling, params as P\n"
            "from pipeline.sub.deep import thing\n"
            "from . import relative\n"
            "if TYPE_CHECKING:\n"
            "    from pipeline.typing_only import T\n"
            "else:\n"
            "    from pipeline import runtime_branch\n"
            "def f():\n"
            "    from pipeline.lazy import g\n"
            "    return g\n"
            "class C:\n"
            "    def m(self):\n"
            "        import importlib\n"
            "        return importlib.import_module('pipeline.dynamic')\n"),
        "pipeline/absolute.py": "X = 1\n",
        "pipeline/sibling.py": "from .sub import parent_rel\n",
        "pipeline/params.py": "from pipeline import behind_exempt\n",
        "pipeline/behind_exempt.py": "X = 1\n",
        "pipeline/sub/__init__.py": "SUB = 1\n",
        "pipeline/sub/deep.py": "from ..  import up_two\nthing = 1\n",
        "pipeline/sub/parent_rel.py": "from pathlib import Path\nSRC = Path(__file__).with_name('kernel.cpp')\n",
        "pipeline/sub/kernel.cpp": "int x;\n",
        "pipeline/up_two.py": "X = 1\n",
        "pipeline/relative.py": "X = 1\n",
        "pipeline/typing_only.py": "T = int\n",
        "pipeline/runtime_branch.py": "X = 1\n",
        "pipeline/lazy.py": "def g(): pass\n",
        "pipeline/dynamic.py": "X = 1\n",
        "pipeline/unused.py": "X = 1\n",
    })
    assert closure("pipeline.main", tmp_path) == {
        "pipeline/main.py", "pipeline/absolute.py", "pipeline/sibling.py", "pipeline/sub/__init__.py",
        "pipeline/sub/deep.py", "pipeline/sub/parent_rel.py", "pipeline/sub/kernel.cpp", "pipeline/up_two.py",
        "pipeline/relative.py", "pipeline/runtime_branch.py", "pipeline/lazy.py", "pipeline/dynamic.py"}
    # and the comparison: one missing, one extra, in a form to paste into the stage's deps
    dvc = {"stages": {"s": {"foreach": ["a", "b"], "do": {
        "cmd": "python -m pipeline.main ${item}",
        "deps": sorted(closure("pipeline.main", tmp_path) - {"pipeline/lazy.py"}) + ["pipeline/unused.py", "data/x"]}}}}
    found = drift(dvc, tmp_path)
    assert found["s"].missing == ["pipeline/lazy.py"] and found["s"].extra == ["pipeline/unused.py"]
    assert report(found).splitlines()[1:] == [
        "  stage s:",
        "    missing (imported or read, not listed: a change would not rerun the stage); add to its deps:",
        "      - pipeline/lazy.py",
        "    extra (listed, never imported: a change reruns it for nothing); remove from its deps:",
        "      - pipeline/unused.py"]
