"""`config.patch`'s file work: RFC 7396 merge, the base hash, the atomic write, kept secrets.

The WebSocket method (gateway/ws/methods/config.py) validates and applies; this module reads
the file with its hash, merges the patch, refuses to send a kept secret to a changed address,
and writes the result in place atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import json5

from gateway.config.errors import PathKey, dotted_path
from gateway.config.schema import non_json_number
from gateway.config.secret_keys import (
    NAME_SEPARATORS,
    REDACTED,
    has_env_reference,
    hidden_key,
    is_marker_name,
    is_secret_file_path,
    is_secret_path,
    is_secret_value,
    shown_names,
)
from gateway.statedir import UnsafeStateError, holds, read_config_file

NEW_FILE_MODE = 0o600  # the file holds secrets
# How often a patch looks again whether another process's patch is done (a few ms each).
LOCK_POLL_S = 0.05

# A key whose value says where a request goes. A sibling is also one when its value is a string
# with "://" in it, whatever its name.
_ADDRESS_SUFFIXES = ("url", "uri", "endpoint", "host", "hostname", "base", "server", "proxy")
_MISSING: Final = object()


def _lookup(value: Any, path: tuple[PathKey, ...]) -> Any:
    for key in path:
        if isinstance(key, str):
            if not isinstance(value, Mapping) or key not in value:
                return _MISSING
        elif not isinstance(value, list) or not 0 <= key < len(value):
            return _MISSING
        value = value[key]
    return value


def _is_address(key: str, *values: Any) -> bool:
    if any(isinstance(v, str) and "://" in v for v in values):
        return True
    name = key.lower().translate(NAME_SEPARATORS)
    return name.endswith(_ADDRESS_SUFFIXES) and all(
        v is _MISSING or not isinstance(v, Mapping | list) for v in values
    )


def secrets_sent_elsewhere(
    base: Mapping[str, Any], patch: Mapping[str, Any], merged: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """(secret, address) paths where `merged` would send a secret the patch did not write out
    to an address the patch changed.

    A patch may keep a secret without knowing it (the redaction marker, or leaving the key out)
    and may name one it cannot read (`${OPENAI_API_KEY}`, or a file such as `store.passwordFile`
    whose first line is the secret); either is fine while the secret goes where it went.
    Changing where it goes (a provider's `baseUrl`, any address-like key beside
    the secret or beside an object holding it, such as the provider of a `headers` value) would
    hand the secret to whoever the patch names, so the patch must then spell out the secret.
    """
    found: list[tuple[str, str]] = []
    # Per object: its address-like keys that the patch changed. Computed once per object, so
    # that a patch of many secrets in one wide object costs its size, not its size squared.
    changed: dict[tuple[PathKey, ...], list[str]] = {}

    def changed_addresses(prefix: tuple[PathKey, ...]) -> list[str]:
        if prefix not in changed:
            old, new = _lookup(base, prefix), _lookup(merged, prefix)
            keys = dict.fromkeys(old if isinstance(old, Mapping) else ())
            keys.update(dict.fromkeys(new if isinstance(new, Mapping) else ()))
            changed[prefix] = [
                key
                for key in keys
                if (before := _lookup(old, (key,))) != (after := _lookup(new, (key,)))
                and _is_address(key, before, after)
            ]
        return changed[prefix]

    for path in _kept_secrets(base, patch, merged):
        for depth in range(len(path)):
            prefix = path[:depth]
            found += [
                (_shown_path(merged, path), _shown_path(merged, (*prefix, key)))
                for key in changed_addresses(prefix)
                if key != path[depth]
            ]
            if found:
                return found  # the first is the one reported
    return found


def _kept_secrets(
    base: Mapping[str, Any], patch: Mapping[str, Any], merged: Mapping[str, Any]
) -> Iterator[tuple[PathKey, ...]]:
    """The paths of the secrets in `merged` that the patch kept without writing them out: a
    secret's value, and a key that holds a secret (secret_keys.hidden_key)."""
    for path, value in _secret_leaves(merged):
        if path[0] == "gateway":
            continue  # the gateway's own token and password: clients send them to us
        given = _lookup(patch, path)
        if (
            isinstance(value, str)
            and given == value
            and (has_env_reference(value) or is_secret_file_path(path))
        ):
            yield path  # written by the patch, but it names a secret the patch never saw
        elif (given is _MISSING or given == REDACTED) and _lookup(base, path) == value:
            yield path  # the file's secret
    for path in _hidden_keys(merged):
        # Sent back as the name config.get shows it by, or left out: the file's.
        if _lookup(patch, path) is _MISSING and _lookup(base, path) is not _MISSING:
            yield path


def _hidden_keys(value: Any, path: tuple[PathKey, ...] = ()) -> Iterator[tuple[PathKey, ...]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if hidden_key(path, key):
                yield (*path, key)
            yield from _hidden_keys(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _hidden_keys(item, (*path, index))


def _shown_path(tree: Any, path: tuple[PathKey, ...]) -> str:
    """`path` in `tree` as config.get names it: a key holding a secret by its shown name."""
    shown: list[PathKey] = []
    for key in path:
        if isinstance(tree, Mapping) and isinstance(key, str) and hidden_key(tuple(shown), key):
            shown.append(shown_names(tuple(shown), tree).get(key, REDACTED))
        else:
            shown.append(key)
        tree = _lookup(tree, (key,))
    return dotted_path(tuple(shown))


def _secret_leaves(
    value: Any, path: tuple[PathKey, ...] = ()
) -> list[tuple[tuple[PathKey, ...], Any]]:
    if isinstance(value, Mapping):
        return [leaf for k, v in value.items() for leaf in _secret_leaves(v, (*path, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _secret_leaves(v, (*path, i))]
    if is_secret_path(path) and is_secret_value(value):
        return [(path, value)]
    return [(path, value)] if is_secret_file_path(path) and isinstance(value, str) else []


@attrs.frozen
class FileState:
    """The config file as it is on disk now."""

    path: Path
    exists: bool
    text: str | None = None
    hash: str | None = None  # sha256 hex of the bytes
    problem: str | None = None  # why there is no text (the loader's words)


def read_file(path: Path, state_dir: Path) -> FileState:
    """The file as the loader reads it (read_config_file), with the loader's words for why not."""
    try:
        data = read_config_file(path, state_dir)
    except FileNotFoundError:
        return FileState(path, False)
    except OSError as exc:  # a directory now, or not readable: there, but no bytes (no hash)
        return FileState(path, True, problem=f"cannot read config file: {exc.strerror or exc}")
    except UnsafeStateError as exc:  # a symlink in the state dir
        return FileState(path, True, problem=str(exc))
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return FileState(path, True, hash=digest, problem=f"not valid UTF-8 (byte {exc.start})")
    return FileState(path, True, text, digest)


@contextlib.asynccontextmanager
async def writers_turn(state_dir: Path) -> AsyncIterator[None]:
    """One config.patch at a time across the processes of one state dir (`--workers`): an
    exclusive flock on the directory itself (it exists while the gateway runs; no lock file
    to create or leave behind). Polled without blocking, so a patch whose client leaves while
    it waits holds nothing."""
    if holds(state_dir):
        # `run` holds it for its life (the SQLite store's one process): the turn is ours, and
        # a second flock of the dir would wait for it for ever. The config lock keeps this
        # process's patches one at a time.
        yield
        return
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # releases the lock


def parse_object(text: str) -> dict[str, Any] | None:
    """The file's object, or None where the loader refuses the text before its schema (so that
    config.get shows no value JSON cannot carry, and a patch merges into none)."""
    try:
        value = json5.loads(text)
    except (ValueError, RecursionError):  # not JSON5, or nested deeper than json5's parser goes
        return None
    if not isinstance(value, dict) or non_json_number(value) is not None:
        return None
    return value


class MarkerWithoutValue(ValueError):
    """A REDACTED array member where the file has no value to keep (merge_patch)."""

    def __init__(self, path: tuple[PathKey, ...]) -> None:
        super().__init__(dotted_path(path))
        self.path = dotted_path(path)


def merge_patch(target: Any, patch: Any, path: tuple[PathKey, ...] = ()) -> Any:
    """RFC 7396, plus: a REDACTED value keeps what `target` has there (config.get's output
    can be sent back as a patch without wiping the secrets).

    An array replaces the file's whole, as RFC 7396 has it; a REDACTED inside it keeps what
    the file has at the same place (index and keys), so that a list config.get shows (agents
    with params, URLs with passwords) can be sent back too. As an object's member with
    nothing there it is left out; as an array's member with nothing there (a longer list)
    it raises MarkerWithoutValue: the marker would be written as the secret. Whether the
    kept secret still goes where it went is secrets_sent_elsewhere's check, as for objects.
    A key config.get shows as REDACTED (numbered from the second: it holds a secret) is the
    file's key of that name in the same object; one the file has not is left out.
    """
    if not isinstance(patch, Mapping):
        return _markers_kept(target, patch, path)
    result = dict(target) if isinstance(target, Mapping) else {}
    keys = _file_keys(path, target)
    for shown, value in patch.items():
        key = keys.get(shown) or shown
        if _unknown_marker(key, target):
            continue  # a hidden key the file does not have: never written as a key
        if value is None:
            result.pop(key, None)
        elif value == REDACTED:
            continue
        else:
            result[key] = merge_patch(result.get(key), value, (*path, shown))
    return result


def _unknown_marker(key: str, target: Any) -> bool:
    """A marker's name that is no key of the file's object: a hidden key's name the file does
    not have (removed meanwhile), or one a client made up. A key of the file spelled like a
    marker, which holds no secret, is shown (and so edited and removed) by its own name."""
    return is_marker_name(key) and not (isinstance(target, Mapping) and key in target)


def _file_keys(path: tuple[PathKey, ...], target: Any) -> dict[str, str]:
    """The file's key for each name config.get shows a hidden key of `target` by (a key that
    holds a secret, shown as REDACTED, numbered from the second)."""
    if not isinstance(target, Mapping):
        return {}
    return {name: key for key, name in shown_names(path, target).items() if name != key}


def _markers_kept(current: Any, value: Any, path: tuple[PathKey, ...]) -> Any:
    """`value`, which replaces `current` whole, with each REDACTED inside an array replaced by
    what `current` has at the same place."""
    if isinstance(value, list):
        kept = []
        for index, item in enumerate(value):
            there = _lookup(current, (index,))
            if item == REDACTED:
                if there is _MISSING:
                    raise MarkerWithoutValue((*path, index))
                kept.append(copy.deepcopy(there))
            else:
                kept.append(_markers_kept(there, item, (*path, index)))
        return kept
    if isinstance(value, Mapping):
        shown: dict[str, Any] = {}
        keys = _file_keys(path, current)
        for name, item in value.items():
            key = keys.get(name) or name
            if _unknown_marker(key, current):
                continue
            there = _lookup(current, (key,))
            if item == REDACTED:
                if there is not _MISSING:
                    shown[key] = copy.deepcopy(there)
            else:
                shown[key] = _markers_kept(there, item, (*path, name))
        return shown
    return value


def write_atomic(path: Path, text: str) -> None:
    """Temp file in the same directory, fsync, rename, fsync the directory; mode and owner kept."""
    target = path.resolve()  # a symlinked config keeps its link
    try:
        info = target.stat()
        mode, owner = info.st_mode & 0o7777, (info.st_uid, info.st_gid)
    except FileNotFoundError:
        mode, owner = NEW_FILE_MODE, None
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                # An administrator's file, the gateway running as root: theirs to edit still.
                with contextlib.suppress(PermissionError):  # only root may give a file away
                    os.fchown(file.fileno(), *owner)
        os.chmod(tmp, mode)  # after the chown, which clears set-id bits
        try:
            os.replace(tmp, target)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            # The file is a mount point (a container's config bind-mounted from the host, a
            # single-file volume), which no rename may replace: written in place instead. Not
            # atomic, but the text is checked already, and a reader that catches it half
            # written fails its reload and takes the whole file on the next one.
            _write_in_place(target, text)
            Path(tmp).unlink()
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_in_place(target: Path, text: str) -> None:
    data = text.encode("utf-8")
    with open(target, "r+b") as file:
        # The blocks first: on a file system too full for the new text, the write would stop
        # partway and leave the file half new (invalid: the next start refuses it), where
        # this fails (ENOSPC) with the old text whole.
        try:
            os.posix_fallocate(file.fileno(), 0, len(data))
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            # A file system that cannot reserve blocks (some FUSE mounts): written as before.
        file.write(data)
        file.truncate()
        file.flush()
        os.fsync(file.fileno())


def render(value: Mapping[str, Any]) -> str:
    """2-space JSON. A lone surrogate (JSON5 can spell one, UTF-8 cannot) can only sit inside
    a string, where `backslashreplace` writes exactly its JSON escape: the file keeps it as
    the escape it came as, and reads back the same."""
    text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
