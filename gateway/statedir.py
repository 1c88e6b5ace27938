"""The state dir's guard: who may write it, and files in it that must not be symlinks.

The state dir holds the token and the session database. Another local user who can write it
(or owns it) can plant a symlink named `gateway.token` or `sessions.sqlite3` there and make the
gateway read or overwrite a file of their choosing, or swap the token for one they know. So the
gateway refuses to start on a state dir it does not own or that others can write, and opens
the files in it with O_NOFOLLOW.

The dir itself may be a symlink: systemd's StateDirectory= under DynamicUser= makes
/var/lib/clawgate a link to /var/lib/private/clawgate. Its target is what is checked.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import stat
from pathlib import Path

# The largest config file read, and the largest config.patch `raw`: json5's parser reads some
# 50-300 KB a second, so this bounds a parse to seconds (a config.patch's holds the config
# lock), where 25 MiB (a WebSocket frame) or a stray 500 MB file would take minutes or hours.
# A config of many agents with long system prompts is some tens of KB.
MAX_CONFIG_BYTES = 1024 * 1024


class UnsafeStateError(Exception):
    """The state dir, or a file in it, is not safe to use; the message says how to fix it."""


def prepare_state_dir(path: Path, *, written: bool = False) -> None:
    """Create the state dir (0700) when missing, then refuse it unless only we can write it;
    `written` (the SQLite store lives there), also when it is on a read-only file system or
    we may not write it."""
    if not path.exists():
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
        except OSError as exc:  # not allowed there, a read-only mount, a file in the way
            if exc.errno == errno.EROFS:
                raise UnsafeStateError(read_only(path)) from None
            raise UnsafeStateError(_cannot_create(path, exc.strerror or str(exc))) from None
    check_state_dir(path)
    _check_writable(path, written=written)


def check_state_dir_usable(path: Path, *, written: bool = False) -> None:
    """Raises UnsafeStateError with the message prepare_state_dir would raise, without creating
    the dir: `config validate` says what `run` would refuse, and changes nothing."""
    if path.exists():
        check_state_dir(path)
        _check_writable(path, written=written)
        return
    if os.path.lexists(path):  # a symlink to nowhere: mkdir meets the link
        raise UnsafeStateError(_cannot_create(path, os.strerror(errno.EEXIST)))
    ancestor = path.parent
    while not ancestor.exists():
        if os.path.lexists(ancestor):
            raise UnsafeStateError(_cannot_create(path, os.strerror(errno.EEXIST)))
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UnsafeStateError(_cannot_create(path, os.strerror(errno.ENOTDIR)))
    if _read_only_mount(ancestor):
        raise UnsafeStateError(read_only(path))
    if not os.access(
        ancestor, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids
    ):
        raise UnsafeStateError(_cannot_create(path, os.strerror(errno.EACCES)))


def _check_writable(path: Path, *, written: bool) -> None:
    """Found now rather than by the store's first write: the mode bits allow what the mount
    refuses, and SQLite's error (a bare EROFS, or "attempt to write a readonly database" of
    a dir it cannot make its -wal file in) says nothing of what to change."""
    if not written:
        return
    if _read_only_mount(path):
        raise UnsafeStateError(read_only(path))
    if not _may_write(path):
        raise UnsafeStateError(
            f"cannot use the state dir {path}: {_user(os.geteuid())} who runs clawgate cannot"
            " write it, and clawgate keeps its session database there. Fix: `chmod 700"
            f" {path}`, or choose a writable state dir with --state-dir."
        )


def _may_write(path: Path) -> bool:
    # The effective ids (and capabilities), as an open by this process would be judged.
    return os.access(path, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids)


def _read_only_mount(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _cannot_create(path: Path, reason: str) -> str:
    return (
        f"cannot create the state dir {path}: {reason}. Fix: create it (mode 700, owned by the"
        " user running clawgate), or choose another one with --state-dir."
    )


class StateDirInUse(Exception):
    """Another process holds the state dir (hold_state_dir); the message says what to do."""


# The state dirs this process holds (hold_state_dir), by their descriptor.
_held: dict[Path, int] = {}


def hold_state_dir(path: Path) -> None:
    """Take the state dir for this process, for its life: an exclusive flock on the directory,
    which the kernel lets go when the process ends, however it ends (no lock file to go
    stale, nothing added to the dir). The SQLite store belongs to one process; a second
    `clawgate run` on it (by mistake, beside the service) is refused, not served beside it.
    config.patch's turn among writers (gateway/config/patch.py) is the same flock: a process
    that holds the dir has it already (`holds`)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateDirInUse(
            f"another clawgate runs on the state dir {path}, and its SQLite session store"
            " belongs to one process. Fix: stop that one first, or give this one a state dir"
            " of its own with --state-dir (several processes share the postgres store)."
        ) from None
    except OSError:
        os.close(fd)  # a file system without flock (NFS may refuse it on a directory)
        return
    _held[path] = fd


def holds(path: Path) -> bool:
    """Whether this process holds the state dir `path` (hold_state_dir)."""
    return path in _held


def read_only(path: Path) -> str:
    return (
        f"cannot use the state dir {path}: it is on a read-only file system (EROFS), and"
        " clawgate keeps its session database there. Fix: mount it read-write (under"
        " systemd's ProtectSystem=, list it in the unit's StateDirectory= or"
        " ReadWritePaths=), or choose a writable state dir with --state-dir."
    )


def check_state_dir(path: Path) -> None:
    try:
        info = path.stat()
    except OSError as exc:
        raise UnsafeStateError(f"cannot use the state dir {path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeStateError(not_a_directory(path))
    uid = os.geteuid()
    if info.st_uid != uid:
        raise UnsafeStateError(
            f"refusing to start: the state dir {path} is owned by {_user(info.st_uid)}, not by"
            f" {_user(uid)} who runs clawgate, so its owner could replace the token or the"
            f" session database. Fix: `chown {_chown_name(uid)} {path}` (and `chmod 700 {path}`),"
            " or choose a state dir of your own with --state-dir."
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = stat.S_IMODE(info.st_mode)
        raise UnsafeStateError(
            f"refusing to start: the state dir {path} is writable by its group or by everyone"
            f" (mode {mode:04o}), so another local user could replace the token or the session"
            f" database. Fix: `chmod 700 {path}`."
        )


def not_a_directory(path: Path) -> str:
    return (
        f"the state dir {path} is not a directory. Fix: move that file away, or choose another"
        " state dir with --state-dir."
    )


def open_in_state_dir(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open() that refuses a symlink and anything but a regular file; returns the fd.

    O_NONBLOCK keeps a planted FIFO from hanging the open; it does not change regular files.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError:
        if path.is_symlink():
            raise UnsafeStateError(_symlink_message(path)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeStateError(
            f"refusing to use {path}: it is not a regular file. Fix: remove it (`rm {path}`)."
        )
    return fd


def read_state_file(path: Path) -> bytes:
    """The whole file, opened with open_in_state_dir(); FileNotFoundError when missing."""
    fd = open_in_state_dir(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as file:
        return file.read()


def read_config_file(path: Path, state_dir: Path) -> bytes:
    """The config file's bytes; FileNotFoundError when missing, OSError when unreadable or
    larger than MAX_CONFIG_BYTES.

    In the state dir a symlink is refused, as for the token and the database; a file the
    administrator named elsewhere (/etc, often a link from config management) is followed.
    Either way only a regular file is read: a FIFO would hold the read (and a reload's or a
    config.patch's lock) until some writer came, a device such as /dev/zero never ends.
    """
    if path.parent == state_dir:
        fd = open_in_state_dir(path, os.O_RDONLY)
    else:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        # A directory: its read says so.
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        data = file.read(MAX_CONFIG_BYTES + 1)  # a file still growing stops here too
        if len(data) > MAX_CONFIG_BYTES:
            size = max(info.st_size, len(data))
            raise OSError(
                errno.EFBIG,
                f"it has {size} bytes, more than the {MAX_CONFIG_BYTES} a config file may hold",
            )
        return data


def _symlink_message(path: Path) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return (
        f"refusing to follow the symlink {path} -> {target}: files in the state dir"
        " must be regular files, or whoever made the link chooses what clawgate reads and"
        f" writes. Fix: remove the link (`rm {path}`) and, if you meant to, copy the file there."
    )


def _chown_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
