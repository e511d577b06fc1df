"""Read MIDI members from a folder, zip or tar without extracting anything, refusing hostile members.

Refused and recorded: absolute paths, `..`, links, devices, and members over the size cap. Non-MIDI members
are not MIDI files and are passed over silently.
"""
from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from pipeline.manifest import Item, Skip

MIDI_SUFFIXES = frozenset({".mid", ".midi", ".kar", ".rmi"})  # .rmi: RIFF-wrapped MIDI (pipeline.smf.unwrap)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class ArchiveError(RuntimeError):
    """The container itself is unreadable (truncated, not an archive)."""


def is_midi_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in MIDI_SUFFIXES


def unsafe_reason(name: str) -> str | None:
    """Why a member name could escape the place it is meant for, or None if it is safe."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if "\\" in name:
        return "backslash in path"
    if ".." in PurePosixPath(name).parts:
        return "'..' in path"
    return None


def _too_large(member: str, size: int, max_bytes: int) -> Skip:
    return Skip(member, "too_large", f"{size} bytes is over the {max_bytes}-byte cap (data.max_file_mb)")


def iter_folder(root: Path, max_bytes: int) -> Iterator[Item | Skip]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            member = path.relative_to(root).as_posix()
            if not is_midi_name(name):
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                yield Skip(member, "link", "symbolic links are not followed")
            elif not stat.S_ISREG(st.st_mode):
                yield Skip(member, "not_a_file", "not a regular file")
            elif st.st_size > max_bytes:
                yield _too_large(member, st.st_size, max_bytes)
            else:
                yield Item(member, path.read_bytes())


def iter_zip(path: Path, max_bytes: int) -> Iterator[Item | Skip]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArchiveError(f"{path}: not a readable zip archive ({e})") from None
    with zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            name = info.filename
            if info.is_dir() or not is_midi_name(name):
                continue
            mode = info.external_attr >> 16
            if (why := unsafe_reason(name)) is not None:
                yield Skip(name, "unsafe_path", f"refused: {why}")
            elif stat.S_ISLNK(mode):
                yield Skip(name, "link", "links inside archives are refused")
            elif info.file_size > max_bytes:
                yield _too_large(name, info.file_size, max_bytes)
            else:
                try:
                    yield Item(name, zf.read(info))
                except (zipfile.BadZipFile, OSError, EOFError) as e:
                    yield Skip(name, "bad_member", f"could not read member: {e}")


def iter_tar(path: Path, max_bytes: int) -> Iterator[Item | Skip]:
    """Stream members in archive order (`r|*`): a multi-GB tarball is never seeked or extracted."""
    try:
        with tarfile.open(path, mode="r|*") as tf:
            for info in tf:
                name = info.name
                if info.isdir() or not is_midi_name(name):
                    continue
                if (why := unsafe_reason(name)) is not None:
                    yield Skip(name, "unsafe_path", f"refused: {why}")
                elif info.issym() or info.islnk():
                    yield Skip(name, "link", "links inside archives are refused")
                elif not info.isfile():
                    yield Skip(name, "not_a_file", "devices, fifos and other special members are refused")
                elif info.size > max_bytes:
                    yield _too_large(name, info.size, max_bytes)
                else:
                    f = tf.extractfile(info)
                    yield Item(name, f.read())
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ArchiveError(f"{path}: archive is truncated or corrupt ({type(e).__name__}: {e})") from None


def iter_path(path: Path, max_bytes: int) -> Iterator[Item | Skip]:
    """MIDI members of a folder, zip or tar archive, by what the path is."""
    path = Path(path)
    if path.is_dir():
        return iter_folder(path, max_bytes)
    lower = path.name.lower()
    if lower.endswith(".zip"):
        return iter_zip(path, max_bytes)
    if lower.endswith(TAR_SUFFIXES):
        return iter_tar(path, max_bytes)
    raise ArchiveError(f"{path}: expected a folder, a .zip or a .tar(.gz|.bz2|.xz) archive")
