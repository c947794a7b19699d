"""The one atomic writer: every file a run leaves (checkpoints, caches, metrics, results) is
written to a temporary file in the same folder, fsynced and renamed over the target, so a reader
(or a resumed run after a kill) sees either the previous file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, cast

from utils.errors import UserError

TEMP_SUFFIX = ".tmp"
_UMASK = os.umask(0o022)  # read the process umask once (os.umask can only read by setting)
os.umask(_UMASK)


class WriteError(UserError, OSError):
    """A file could not be written (full disk, read-only folder, a file where a folder should be):
    one clear line for the user, and still an OSError for callers that tolerate it (caches)."""

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror else super().__str__()


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing part of `path` (itself or a parent folder) when it is not a folder."""
    for part in (path, *path.parents):
        if part.exists() or part.is_symlink():
            return None if part.is_dir() else part
    return None


def write_cause(path: str | Path, err: OSError) -> str:
    """Why writing `path` failed: the errno's meaning ("No space left on device", "Read-only file
    system", "Permission denied"), or the file that stands where a folder is needed (Python's own
    "File exists" or "Not a directory" names neither)."""
    blocker = _file_in_the_way(Path(path))
    if blocker is not None and err.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"{blocker} is a file, not a folder"
    return os.strerror(err.errno) if err.errno else (err.strerror or str(err))


def write_error(path: str | Path, err: OSError, what: str = "cannot write") -> WriteError:
    """The one-line `WriteError` of an OSError while writing `path`: `<what> <path>: <cause>`."""
    return WriteError(err.errno or errno.EIO, f"{what} {path}: {write_cause(path, err)}")


class _Recorder:
    """A file object that remembers the OSError of a failed write: torch.save reports a full disk
    as RuntimeError('unexpected pos ...'), and the recorded error says what happened."""

    def __init__(self, fh: BinaryIO):
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(fh)` on a temporary file, fsync it, rename it to `path`, fsync the folder.
    Any OSError (also one a library reports as another exception) becomes a `WriteError` naming
    the file and the cause; the previous file is then unchanged and no temporary is left."""
    path = Path(path)
    recorder: list[_Recorder] = []
    try:
        return _atomic_write(path, write, recorder)
    except WriteError:
        raise
    except Exception as err:
        cause = err if isinstance(err, OSError) else (recorder[0].error if recorder else None)
        if cause is None:
            raise
        failure = write_error(path, cause)
        if path.exists():
            failure.strerror = f"{failure.strerror} (the previous version is unchanged)"
        raise failure from None


def make_folder(path: str | Path, what: str) -> Path:
    """mkdir -p, with one clear line when the path or a parent is a file or not writable."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(err.errno, f"{what} {path}: cannot create the folder: {write_cause(path, err)}") from None
    if not os.access(path, os.W_OK):
        code = errno.EROFS if _read_only(path) else errno.EACCES
        raise WriteError(code, f"{what} {path}: cannot write in the folder: {os.strerror(code)}")
    return path


def _read_only(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    return False


def _atomic_write(path: Path, write: Callable[[BinaryIO], object], recorder: list[_Recorder]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            recorder.append(_Recorder(fh))
            write(cast(BinaryIO, recorder[0]))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # some file systems do not support fsync on directories
        _fsync(path.parent)
    return path


def fsync_path(path: str | Path) -> None:
    """Flush a finished file, or every file of a finished folder, to disk before it is renamed
    into place, so that after a power loss a renamed output is complete rather than empty (a kill
    alone cannot leave it half-written: the rename already ensures that)."""
    path = Path(path)
    for f in sorted(path.iterdir()) if path.is_dir() else [path]:
        if f.is_file():
            _fsync(f)
    if path.is_dir():
        with contextlib.suppress(OSError):  # some file systems do not support fsync on directories
            _fsync(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def write_csv(path: str | Path, rows: list[dict[str, Any]], fields: list[str]) -> Path:
    """Atomic CSV with a header (`fields`; other keys of a row are left out), floats as %.6f."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return atomic_write_text(path, text.getvalue())


def remove_temporaries(folder: str | Path) -> int:
    """Delete temporaries left in `folder` by a process killed inside `atomic_write`."""
    count = 0
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        try:
            tmp.unlink()
            count += 1
        except OSError:
            pass
    return count


def write_npz(path: str | Path, arrays: Mapping[str, object]) -> Path:
    """Atomic `.npz` (uncompressed, loadable by `numpy.load` without pickle) whose bytes depend on the
    arrays only: fixed entry order and timestamps, so two runs that computed the same arrays write
    the same file (numpy's savez stamps the current time)."""
    import zipfile

    import numpy as np

    def write(fh: BinaryIO) -> None:
        with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, value in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as entry:
                    np.lib.format.write_array(entry, np.asanyarray(value), allow_pickle=False)

    return atomic_write(path, write)
