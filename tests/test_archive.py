import io
import tarfile
import zipfile

import pytest

from pipeline.archive import ArchiveError, iter_path, unsafe_reason
from pipeline.manifest import Item, Skip


def _split(entries):
    entries = list(entries)
    items = {e.member: e for e in entries if isinstance(e, Item)}
    skips = {e.member: e for e in entries if isinstance(e, Skip)}
    return items, skips


def test_folder_is_searched_recursively_in_any_letter_case(midi_folder):
    items, skips = _split(iter_path(midi_folder, 1 << 20))
    assert "folk/AprilWaltz.MIDI" in items
    assert "piano/fur-elise.mid" in items and "broken/muspy__empty.mid" in items
    assert "notes.txt" not in items and "SOURCES.md" not in items
    assert list(items) == sorted(items)
    assert items["piano/fur-elise.mid"].data == (midi_folder / "piano/fur-elise.mid").read_bytes()
    assert not skips


def test_folder_skips_links_and_oversized_files(midi_folder, tmp_path):
    (midi_folder / "link.mid").symlink_to(midi_folder / "piano" / "fur-elise.mid")
    items, skips = _split(iter_path(midi_folder, 5000))
    assert skips["link.mid"].reason == "link"
    assert skips["pop/pypianoroll_sample2.mid"].reason == "too_large"
    assert "link.mid" not in items


def _zip(tmp_path, members):
    path = tmp_path / "c.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def test_zip_refuses_escaping_members(tmp_path, fixtures):
    good = (fixtures / "folk" / "AlnwickCastle.mid").read_bytes()
    path = _zip(tmp_path, [("a/ok.mid", good), ("../../evil.mid", good), ("/abs.mid", good),
                           ("readme.txt", b"x")])
    link = zipfile.ZipInfo("a/link.mid")
    link.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(link, "ok.mid")
    items, skips = _split(iter_path(path, 1 << 20))
    assert list(items) == ["a/ok.mid"] and items["a/ok.mid"].data == good
    assert skips["../../evil.mid"].reason == "unsafe_path"
    assert skips["/abs.mid"].reason == "unsafe_path"
    assert skips["a/link.mid"].reason == "link"


def _tar(tmp_path, name="c.tar.gz"):
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tf:
        def add(info, data=b""):
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data else None)
        add(tarfile.TarInfo("lmd/0/ok.mid"), b"MThd-fake")
        add(tarfile.TarInfo("../evil.mid"), b"MThd")
        sym = tarfile.TarInfo("lmd/sym.mid")
        sym.type = tarfile.SYMTYPE
        sym.linkname = "/etc/passwd"
        add(sym)
        dev = tarfile.TarInfo("lmd/dev.mid")
        dev.type = tarfile.CHRTYPE
        add(dev)
        add(tarfile.TarInfo("lmd/big.mid"), b"x" * 100)
    return path


def test_tar_refuses_links_devices_escapes_and_oversize(tmp_path):
    items, skips = _split(iter_path(_tar(tmp_path), 50))
    assert list(items) == ["lmd/0/ok.mid"]
    assert {k: v.reason for k, v in skips.items()} == {
        "../evil.mid": "unsafe_path", "lmd/sym.mid": "link", "lmd/dev.mid": "not_a_file", "lmd/big.mid": "too_large"}
    assert not (tmp_path / "evil.mid").exists() and not (tmp_path.parent / "evil.mid").exists()


def test_truncated_tar_is_a_clear_error(tmp_path):
    path = _tar(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        list(iter_path(path, 1 << 20))


def test_unsupported_path_kind(tmp_path):
    f = tmp_path / "x.rar"
    f.write_bytes(b"")
    with pytest.raises(ArchiveError, match="expected a folder"):
        iter_path(f, 10)


@pytest.mark.parametrize("name, bad", [("a/b.mid", False), ("../x.mid", True), ("/x.mid", True),
                                       ("C:/x.mid", True), ("a\\..\\x.mid", True), ("a..b.mid", False)])
def test_unsafe_reason(name, bad):
    assert (unsafe_reason(name) is not None) == bad
