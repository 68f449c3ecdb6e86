"""Files and folders written whole or not at all, shared by every `surgery` command that writes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import InputError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place.

    A failure midway leaves no partial file at `path` and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: object) -> None:
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def read_text(path: Path, what: str = "") -> str:
    """A UTF-8 file's text; an InputError naming the file (and `what` it is) when it is not UTF-8 text."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start} is {e.object[e.start:e.start + 1]!r})"
                         f"{f', expected {what}' if what else ''}") from None


def read_json(path: Path, what: str = "a JSON file") -> object:
    """A JSON file's value; an InputError naming the file when it is truncated, corrupted or not UTF-8."""
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}), expected {what}") from None


def read_toml(path: Path, what: str = "a TOML file") -> dict:
    import tomllib

    try:
        return tomllib.loads(read_text(path, what))
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML ({e}), expected {what}") from None


def damaged_file(path: Path) -> str | None:
    """Why a saved weights or state file cannot be whole (truncated: its own index does not fit), or None.
    Reads headers only: safetensors' offsets, and the zip directory every torch.save file ends with."""
    import zipfile

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt"):
                return None
        except (SafetensorError, OSError) as e:
            return str(e).splitlines()[0]
    if path.suffix in (".pt", ".pth", ".bin"):
        try:
            with zipfile.ZipFile(path):
                return None
        except (zipfile.BadZipFile, OSError) as e:
            return str(e)
    return None


def save_folder(path: Path, save: Callable[[Path], None]) -> None:
    """Call `save(tmp_dir)` beside `path`, then swap it into place: never a half-written folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    old = path.parent / f".{path.name}.old"
    try:
        save(tmp)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


LOCK = ".surgery.lock"


def _is_zombie(pid: int) -> bool:
    """A process that has exited and waits to be reaped (a killed run's rank whose launcher died first):
    `kill(pid, 0)` still finds it, but it writes nothing any more."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class FolderLock:
    """Held while a run writes into `folder`: a second run into the same folder is refused (one line naming
    the pid) while the first is alive; a lock left by a run that died (no such process) is taken over."""

    def __init__(self, folder: Path, option: str):
        self.path, self.option = Path(folder) / LOCK, option

    def _holder(self) -> int | None:
        try:
            pid = int(self.path.read_text().split()[0])
            os.kill(pid, 0)  # no signal sent: only asks whether the process exists
        except (OSError, ValueError, IndexError):
            return None
        return None if _is_zombie(pid) else pid

    def __enter__(self):
        from .errors import InputError

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if (pid := self._holder()) is not None and pid != os.getpid():
                    raise InputError(f"{self.option} {self.path.parent}: another surgery run (pid {pid}) is writing "
                                     f"here; wait for it, or remove {self.path} if that process is not surgery") from None
                self.path.unlink(missing_ok=True)  # stale: its run died
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            return self
        raise InputError(f"{self.option} {self.path.parent}: could not take {self.path}")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
