"""Files of a run folder, written and read safely (no TensorFlow here).

Written files never go through a planted link and never stay half-written;
read files must be regular files (a FIFO would block, a device never end).
Folders written before a rename (``private_folder``) carry their writer's host
and process id in their name, so a later run can remove those whose writer
died (``remove_dead_leftovers``) and never one still being written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import stat
import tempfile

from absl import logging

from trainer.errors import DataError, UsageError


def write_atomically(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a fresh temporary file and a rename.

    The temporary file is created exclusively (never through a planted link)
    and ``rename`` replaces a link at ``path`` instead of following it; the
    temporary file is removed if anything fails.
    """
    folder = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def write_json(path: str, payload) -> None:
    """Writes ``payload`` as indented JSON, atomically.

    Raises:
      UsageError: naming ``path``, when it cannot be written.
    """
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    try:
        write_atomically(path, text)
    except OSError as error:
        raise UsageError(f"{path}: cannot write ({error.strerror or error})") from None


def is_regular_file(path: str) -> bool:
    """Whether ``path`` is a regular file (following links); False if it is missing."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def read_json(path: str):
    """The JSON value in the regular file ``path``.

    Raises:
      OSError: missing, unreadable, or not a regular file.
      ValueError: not JSON (``json.JSONDecodeError``, ``UnicodeDecodeError``) or
        nested too deeply.
    """
    if os.path.exists(path) and not is_regular_file(path):
        raise OSError(f"{path} is not a regular file")
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except RecursionError:
            raise ValueError("nested too deeply") from None


def writable_folder(folder: str, label: str) -> None:
    """Creates ``folder`` if needed; raises ``UsageError`` naming ``label`` if unusable."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{label}: cannot create ({error.strerror or error})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{label}: folder is not writable")


def writable_run_folder(folder: str, label: str, subfolders=()) -> None:
    """Refuses, before any work, an existing run folder that cannot be written
    (a mode that writes results and summaries but creates nothing, ``--mode=eval``).

    ``folder`` and those of ``subfolders`` (names inside it) that exist must be
    writable folders; a missing ``folder`` passes (the mode says what it lacks).

    Raises:
      UsageError: naming ``label`` (and the subfolder) and the problem.
    """
    if not os.path.lexists(folder):
        return
    for path in [folder, *(os.path.join(folder, name) for name in subfolders)]:
        where = label if path == folder else path
        if not os.path.lexists(path):
            continue
        if not os.path.isdir(path):
            raise UsageError(f"{where}: is not a folder; results and summaries are written there")
        if not os.access(path, os.W_OK | os.X_OK):
            reason = "read-only file system" if _read_only_mount(path) else "no write permission"
            raise UsageError(
                f"{where}: folder is not writable ({reason}); results and summaries are "
                "written there"
            )


def _read_only_mount(path: str) -> bool:
    with contextlib.suppress(OSError, AttributeError):
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    return False


# -- input files ------------------------------------------------------------------
_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int, label: str, kind: str) -> DataError | None:
    """The error for a file of ``mode`` that is not a regular file, or None."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return DataError(f"{label}: is a folder, not a {kind}")
    what = next((name for test, name in _KINDS if test(mode)), "not a file")
    return DataError(f"{label}: is not a regular file ({what}); expected a {kind}")


def check_input_file(path: str, label: str, kind: str = "file", empty_ok: bool = True) -> None:
    """Refuses an input ``path`` that is missing or is not a regular file
    (following links): a folder, a FIFO (reading would block), a device such as
    ``/dev/null`` or ``/dev/zero``, a socket; with ``empty_ok=False`` an empty file.

    Raises:
      DataError: ``"<label>: no such file"``, ``"<label>: is a folder, not a
        <kind>"``, ``"<label>: is not a regular file (a FIFO)"``, ``"<label>:
        is empty"`` or ``"<label>: cannot read (...)"``.
    """
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            raise DataError(f"{label}: is a link to a missing file") from None
        raise DataError(f"{label}: no such file") from None
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or error
        raise DataError(f"{label}: cannot read ({reason})") from None
    problem = _not_regular(info.st_mode, label, kind)
    if problem is not None:
        raise problem
    if not empty_ok and info.st_size == 0:
        raise DataError(f"{label}: is empty")


def open_regular_file(path: str, kind: str = "file"):
    """``open(path, "rb")`` of a regular file only, checked on the open file: a
    FIFO is never waited on (opened non-blocking, then refused), a device
    never read.

    Raises:
      DataError: ``path`` is not a regular file (named as ``check_input_file`` does).
      OSError: it cannot be opened.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        problem = _not_regular(os.fstat(fd).st_mode, path, kind)
        if problem is not None:
            raise problem
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def exclusive_lock(path: str, busy, record: str, hint: str, cloexec: bool = False) -> int:
    """Takes the exclusive ``flock`` of lock file ``path`` without waiting, writes
    ``record`` (who holds it) into it, and returns the open descriptor; the kernel
    drops the lock with the last descriptor, however the process ends.

    The file is created if missing, never opened through a link (``O_NOFOLLOW``)
    and must be a regular file (a FIFO is opened non-blocking, then refused).

    Args:
      busy: ``busy(holder) -> message`` when another process holds it (``holder``:
        the record it wrote).
      hint: what to do about a planted link or non-file, for the messages.
      cloexec: close the descriptor across ``exec``.

    Raises:
      UsageError: naming ``path`` and the problem, or ``busy``'s message.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags | (os.O_CLOEXEC if cloexec else 0), 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UsageError(
                f"{path}: is a symbolic link; locks never follow links ({hint})"
            ) from None
        raise UsageError(f"{path}: cannot create the lock ({error.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{path}: is not a regular file; {hint}")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "pid unknown"
        os.close(fd)
        if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise UsageError(busy(holder)) from None
        raise UsageError(f"{path}: cannot lock ({error.strerror})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)
    return fd


# -- private folders and the leftovers of dead writers --------------------------------
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"
# <prefix><host>.<pid>.<mkdtemp's random part>
_WRITER = re.compile(r"([A-Za-z0-9_-]+)\.([1-9][0-9]{0,9})\.[A-Za-z0-9_]+")


@contextlib.contextmanager
def private_folder(parent: str, prefix: str):
    """Yields a new folder ``<parent>/<prefix><host>.<pid>.<random>``, created
    exclusively (never a planted link), for a writer that renames it into place
    when complete.

    The folder is locked (``flock``) while the block runs, and is removed when
    the block ends unless it was renamed away. A writer killed outright
    (SIGKILL, a crash, a power cut) leaves it: ``remove_dead_leftovers`` removes
    it later, its process being gone.

    Raises:
      OSError: the folder cannot be created.
    """
    path = tempfile.mkdtemp(prefix=f"{prefix}{_HOST}.{os.getpid()}.", dir=parent)
    lock = None
    try:
        lock = _locked(path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)  # gone already once renamed into place
        if lock is not None:
            os.close(lock)


def _locked(path: str):
    """An open descriptor of folder ``path`` holding its exclusive ``flock``, or
    None where the file system has no such locks."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    if _try_lock(fd) is False:  # never: the folder is new and ours
        os.close(fd)
        raise OSError(errno.EWOULDBLOCK, f"{path}: locked by another process")
    return fd


def _try_lock(fd: int) -> bool | None:
    """Takes ``fd``'s exclusive lock: True, False if another process holds it,
    None where locks are not supported."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None


def writer_of(name: str, prefix: str) -> tuple[str, int] | None:
    """``(host, pid)`` of a ``private_folder`` named ``name``; None for any
    other name (another program's, or an older version's: never removed)."""
    if not name.startswith(prefix):
        return None
    found = _WRITER.fullmatch(name[len(prefix) :])
    return (found.group(1), int(found.group(2))) if found else None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, dead but not yet
    waited for, does not)."""
    if pid <= 0:
        return True  # not a process id: never judged dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's process, alive
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def remove_dead_leftovers(parent: str, prefix: str) -> list[str]:
    """Removes the ``private_folder`` folders with ``prefix`` in ``parent`` that
    their writer left when it was killed; returns their paths, logging one
    line each.

    A folder is removed only when its name says it was written on this host,
    its writer's process is gone, it belongs to this user, and its lock (held
    by a live writer, whatever its process id means here) can be taken.
    Anything else is kept: a live writer's folder, another host's, another
    program's, or one named otherwise.
    """
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    removed = []
    for name in names:
        writer = writer_of(name, prefix)
        if writer is None or writer[0] != _HOST or process_alive(writer[1]):
            continue
        path = os.path.join(parent, name)
        if _remove_if_unlocked(path):
            logging.info(
                "removed %s: the unfinished temporary folder of process %d, which ended "
                "before completing it",
                path,
                writer[1],
            )
            removed.append(path)
    return removed


def _remove_if_unlocked(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:  # gone, a link, not a folder
        return False
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or _try_lock(fd) is False:
            return False
        try:
            if os.lstat(path).st_ino != info.st_ino:  # replaced meanwhile
                return False
            shutil.rmtree(path)
        except FileNotFoundError:
            return False  # another run removed it first
        except OSError as error:
            logging.warning("cannot remove the leftover %s (%s)", path, error.strerror or error)
            return False
        return True
    finally:
        os.close(fd)
