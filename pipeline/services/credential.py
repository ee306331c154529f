"""The operator credential: the one secret that opens the control plane (the Prefect server's API and UI, and the
dashboard).

It is the setting ``dashboard_password`` when the operator set one. Otherwise ``tradeforge up`` creates a random one
on its first start into ``<data_dir>/run/operator-credential`` (readable by its owner only, mode 0600; the data
folder is git-ignored) and reuses it on every later start. Prefect calls it the API auth string: the server
(``PREFECT_SERVER_API_AUTH_STRING``) requires it in every API request, its UI asks for it once per browser, and
every client sends it (``PREFECT_API_AUTH_STRING``). To use the ``prefect`` command line against that server::

    export PREFECT_API_URL=http://127.0.0.1:4200/api
    export PREFECT_API_AUTH_STRING="$(cat data/run/operator-credential)"
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

from pipeline.settings import Settings

FILE_NAME = "operator-credential"
MODE = 0o600
CLIENT_VARIABLE = "PREFECT_API_AUTH_STRING"
"""Prefect's own client setting: when set in the environment, a client uses it before anything stored."""


class CredentialError(RuntimeError):
    """The stored credential cannot be read or written; the message names the file and the problem."""


def credential_file(settings: Settings) -> Path:
    """Where ``tradeforge up`` keeps the credential it created: ``<data_dir>/run/operator-credential``."""
    return settings.data_dir / "run" / FILE_NAME


def _chosen(settings: Settings) -> str | None:
    secret = settings.dashboard_password
    value = secret.get_secret_value() if secret is not None else ""
    return value or None


def stored(settings: Settings) -> str | None:
    """The credential in the file, None when there is no file (or it is empty)."""
    path = credential_file(settings)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"cannot read the operator credential {path}: {exc}") from exc
    return value or None


def operator_credential(settings: Settings) -> str | None:
    """The credential in effect: ``dashboard_password`` when set, else the one ``up`` stored, else None (nothing
    asks for one)."""
    return _chosen(settings) or stored(settings)


def ensure(settings: Settings) -> str:
    """The credential ``up`` serves with: ``dashboard_password`` when set; otherwise the stored one, created (random,
    mode 0600) on first use. A stored file that others may read is made private again."""
    chosen = _chosen(settings)
    if chosen is not None:
        return chosen
    path = credential_file(settings)
    existing = stored(settings)
    if existing is not None:
        try:
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                path.chmod(MODE)
        except OSError as exc:
            raise CredentialError(f"cannot make the operator credential {path} private (mode 0600): {exc}") from exc
        return existing
    value = secrets.token_urlsafe(24)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, written = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # mode 0600
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(value + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            if path.is_file() and not path.is_symlink() and not path.read_text(encoding="utf-8").strip():
                os.replace(written, path)  # a blank file left by someone: replaced (ours are never blank)
            else:
                os.link(written, path)  # the whole credential or nothing; another start's file is kept
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(written)
    except FileExistsError:  # another start created it in between: use theirs
        theirs = stored(settings)
        if theirs is None:
            raise CredentialError(f"the operator credential {path} is empty: delete it and start again") from None
        return theirs
    except OSError as exc:
        raise CredentialError(f"cannot create the operator credential {path}: {exc}") from exc
    return value


def client_auth_string(settings: Settings) -> str | None:
    """What a client of the Prefect server sends: ``PREFECT_API_AUTH_STRING`` from the environment when set (as
    Prefect's own clients do), else the operator credential; None when there is none."""
    return os.environ.get(CLIENT_VARIABLE) or operator_credential(settings)
