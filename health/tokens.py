"""Read-only API tokens per hospital, per province, or for the whole programme; stored hashed.

A token is shown once, when ``oxyfleet tokens create`` makes it: ``oxy_<id>_<secret>``. The file keeps
the id, the scope and scrypt(secret) with a per-token salt, never the secret, so a copied tokens file
opens nothing. A request's token is checked once per process and then remembered by its SHA-256, since
scrypt is slow on purpose.

Who reads what: the programme's token reads everything; a hospital's token reads its hospital's reports;
a province's token its province's reports and those of the hospitals in it. Without a token the API
answers only when it is bound to loopback (the operator's own machine): 401 otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Literal

from fastapi import HTTPException, Request

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Access", "ScopeKind", "TokenError", "TokenStore", "current_access", "require_programme"]

ScopeKind = Literal["programme", "hospital", "province"]
_N: Final = 2**14  # scrypt cost: ~30 ms per check here, paid once per token per process
_R: Final = 8
_P: Final = 1


class TokenError(ValueError):
    """The tokens file is unreadable, or a scope is invalid."""


@dataclass(frozen=True, slots=True)
class Access:
    """What the caller may read."""

    kind: ScopeKind
    name: str = ""
    token_id: str = ""

    def allows(self, by: str, name: str, province: str | None = None) -> bool:
        """May this caller read the report of ``by``/``name`` (a hospital's province given for provinces)?"""
        if self.kind == "programme":
            return True
        mine = self.name.casefold()
        if self.kind == "hospital":
            return by == "hospital" and name.casefold() == mine
        return (by == "province" and name.casefold() == mine) or (
            by == "hospital" and province is not None and province.casefold() == mine
        )


def _hash(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32).hex()


class TokenStore:
    """The tokens file (JSON): create, list, revoke and check tokens."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._known: dict[str, Access] = {}
        self._mtime: int | None = None

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise TokenError(f"{self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise TokenError(f"{self.path}: not a JSON object of tokens")
        return data

    def _save(self, data: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        tmp.replace(self.path)

    def create(self, kind: ScopeKind, name: str = "", note: str = "") -> tuple[str, str]:
        """A new token for a scope: (token id, the token itself; shown once)."""
        if kind != "programme" and not name.strip():
            raise TokenError(f"a {kind} token needs the {kind}'s name")
        token_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(24).replace("_", "x")
        salt = secrets.token_bytes(16)
        with self._lock:
            data = self._load()
            data[token_id] = {
                "kind": kind,
                "name": name.strip(),
                "note": note,
                "salt": salt.hex(),
                "scrypt": _hash(secret, salt),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            self._save(data)
        return token_id, f"oxy_{token_id}_{secret}"

    def list(self) -> list[dict[str, str]]:
        """Tokens without their hashes."""
        return [
            {"id": k, **{f: v.get(f, "") for f in ("kind", "name", "note", "created")}}
            for k, v in sorted(self._load().items())
        ]

    def revoke(self, token_id: str) -> bool:
        """Remove a token; False when there was none with this id."""
        with self._lock:
            data = self._load()
            if data.pop(token_id, None) is None:
                return False
            self._save(data)
            self._known.clear()
        return True

    def check(self, token: str) -> Access | None:
        """The access a token grants, or None when it is unknown or wrong."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime_ns
            except FileNotFoundError:
                mtime = None
            if mtime != self._mtime:  # revoked or added from the CLI while the API runs
                self._known.clear()
                self._mtime = mtime
            if digest in self._known:
                return self._known[digest]
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "oxy":
            return None
        entry = self._load().get(parts[1])
        if entry is None:
            return None
        if not hmac.compare_digest(_hash(parts[2], bytes.fromhex(entry["salt"])), entry["scrypt"]):
            return None
        kind = entry["kind"]
        if kind not in ("programme", "hospital", "province"):
            return None
        access = Access(kind, entry.get("name", ""), parts[1])  # type: ignore[arg-type]
        with self._lock:
            self._known[digest] = access
        return access


def current_access(request: Request) -> Access:
    """FastAPI dependency: the caller's access, or 401 (no/invalid token where one is needed)."""
    store: TokenStore | None = getattr(request.app.state, "tokens", None)
    loopback: bool = getattr(request.app.state, "loopback", True)
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not token:
        if loopback:
            return Access("programme")
        raise HTTPException(
            401, "a token is required: Authorization: Bearer oxy_...", {"WWW-Authenticate": "Bearer"}
        )
    access = store.check(token) if store is not None else None
    if access is None:
        raise HTTPException(401, "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
    return access


def require_programme(request: Request) -> Access:
    """FastAPI dependency for the fleet-wide routes: the programme's token (or loopback without one)."""
    access = current_access(request)
    if access.kind != "programme":
        raise HTTPException(403, "this token reads its own reports only (/api/reports/...)")
    return access
