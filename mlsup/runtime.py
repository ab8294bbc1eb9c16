"""The runtime directory: where sockets, the embedded Redis and published URLs live.

It is ``$MLSUP_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/mlsup``, else ``/tmp/mlsup-$UID``, and it
is private to the user (mode 0700). A directory owned by someone else is refused rather than
used: another user could then read our sockets.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mlsup import defaults
from mlsup.errors import ConfigError

__all__ = ["CONTROL_SOCKET", "ensure_runtime_dir", "runtime_dir"]

ENV_RUNTIME_DIR = "MLSUP_RUNTIME_DIR"
#: The supervisor's control socket, inside the runtime directory.
CONTROL_SOCKET = "supervisor.sock"


def runtime_dir() -> Path:
    """The runtime directory this process uses (not created)."""
    explicit = os.environ.get(ENV_RUNTIME_DIR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / defaults.RUNTIME_DIR_NAME
    return Path("/tmp") / f"mlsup-{os.getuid()}"


def ensure_runtime_dir(path: Path | None = None) -> Path:
    """Create the runtime directory with mode 0700, or check an existing one.

    Raises :class:`ConfigError` if the path is not a directory or belongs to another user.
    """
    path = runtime_dir() if path is None else path
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"runtime directory {path} is not a directory; remove it or set {ENV_RUNTIME_DIR}",
            path=str(path),
        )
    try:
        path.mkdir(mode=defaults.RUNTIME_DIR_MODE, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise ConfigError(
            f"cannot create the runtime directory {path}: {exc.strerror}; "
            f"set {ENV_RUNTIME_DIR} to a writable directory",
            path=str(path),
        ) from exc
    if not stat.S_ISDIR(info.st_mode):  # a symlink: could point anywhere, refuse it
        raise ConfigError(
            f"runtime directory {path} is a link; point {ENV_RUNTIME_DIR} at a real directory",
            path=str(path),
        )
    if info.st_uid != os.getuid():
        raise ConfigError(
            f"runtime directory {path} belongs to uid {info.st_uid}, not to you; "
            f"set {ENV_RUNTIME_DIR} to a directory of your own",
            path=str(path),
        )
    if stat.S_IMODE(info.st_mode) != defaults.RUNTIME_DIR_MODE:
        # Ours but too open (say, created by an older umask): tighten rather than refuse.
        os.chmod(path, defaults.RUNTIME_DIR_MODE)
    return path
