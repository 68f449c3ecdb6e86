"""Files and folders written whole or not at all, shared by every `surgery` command that writes."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import InputError, WriteError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place.

    A failure midway leaves no partial file at `path` and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(path, path.suffix or ".tmp", _new_file)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _beside(path: Path, suffix: str, create: Callable[[Path], None]) -> Path:
    """A new, uniquely named file or folder beside `path`, made by `create` (which fails if it exists) with the
    mode open() and mkdir() give under the umask: tempfile's are private (0600, 0700), and a result renamed from
    one would be unreadable to the rest of a lab on a shared filesystem."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            create(tmp)
            return tmp
        except FileExistsError:
            continue


def _new_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


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
    tmp = _beside(path, "", os.mkdir)
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
    the pid) while the first is alive; a lock left by a run that died (no such process) is taken over. A folder
    the lock made is removed again when the run fails before writing anything into it."""

    def __init__(self, folder: Path, option: str):
        self.path, self.option = Path(folder) / LOCK, option
        self.made = False

    def _holder(self) -> int | None:
        try:
            pid = int(self.path.read_text().split()[0])
            os.kill(pid, 0)  # no signal sent: only asks whether the process exists
        except (OSError, ValueError, IndexError):
            return None
        return None if _is_zombie(pid) else pid

    def __enter__(self):
        self.made = not self.path.parent.exists()
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

    def __exit__(self, kind, *exc):
        self.path.unlink(missing_ok=True)
        if kind is not None and self.made and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()


# Why a write fails when the machine, not the input, refuses it, and what the user can do about it. safetensors
# and torch.save report a failed write in their own exception types; their text carries the OS's code.
REMEDIES = {errno.ENOSPC: "free space", errno.EDQUOT: "free space", errno.EFBIG: "free space",
            errno.EACCES: "make it writable", errno.EPERM: "make it writable", errno.EROFS: "make it writable",
            errno.EISDIR: "move what is in the way", errno.ENOTDIR: "move what is in the way",
            errno.EEXIST: "move what is in the way"}
_OS_CODE = re.compile(r"os error (\d+)|\[Errno (\d+)\]")
UNKNOWN = -1  # torch.save's stream writer says a write failed, not why


def write_failure(error: BaseException) -> tuple[str | None, int] | None:
    """(the path, when the error names one; the OS's error code, or UNKNOWN) when `error`, or an error it was
    raised from, is a write the machine refused; None for any other error."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in REMEDIES:
            return error.filename, error.errno
        code = _OS_CODE.search(str(error))
        if code and int(code.group(1) or code.group(2)) in REMEDIES:
            return None, int(code.group(1) or code.group(2))
        if "file write failed" in str(error):
            return None, UNKNOWN
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return None


@contextlib.contextmanager
def writing(folder: Path, kept: Callable[[], str]) -> Iterator[None]:
    """A write refused inside the block becomes one WriteError line: the path (else `folder`), the OS's reason,
    `kept()` (what the folder keeps), and what to do before running the same command again."""
    try:
        yield
    except InputError:  # a bad input (or a write already reported) says what it is itself
        raise
    except Exception as e:
        found = write_failure(e)
        if found is None:
            raise
        path, code = found
        reason = os.strerror(code) if code != UNKNOWN else "a write failed (a full disk, or no permission)"
        remedy = REMEDIES.get(code, "free space or make it writable")
        raise WriteError(f"{path or folder}: {reason}; {kept()}; {remedy} and run the same command again") from None
