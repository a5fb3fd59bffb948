"""The users of ``ferrosmtp serve --auth-file``: password hashes and the file that holds
them.

One ``user:secret`` per line; the secret is a password hash in Dovecot's notation (a
``{SCHEME}`` prefix), so a Dovecot ``passwd-file`` entry can be copied over:

- ``{SCRYPT}$scrypt$ln=15,r=8,p=1$<salt>$<hash>``: salted scrypt from the standard
  library (the PHC string format; base64 without padding). The default of
  ``ferrosmtp passwd``.
- ``{BLF-CRYPT}$2y$...``: bcrypt, Dovecot's BLF-CRYPT (needs ``pip install bcrypt``).
- ``{ARGON2ID}$argon2id$v=19$...``: Argon2id, Dovecot's ARGON2ID (needs ``pip install
  argon2-cffi``).
- ``{sha256}<hex>`` (unsalted; ferrosmtp's older form) and a bare password: still read,
  and named in a warning at load, since a stolen file gives them away.

``ferrosmtp passwd`` (``cli_passwd.py``) writes entries. Checking a slow hash takes tens
of milliseconds of CPU, so the authenticator checks in a worker thread, and does the same
work for an unknown user as for a known one (no timing oracle for user names).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["SCHEMES", "FileAuthenticator", "hash_password", "verify"]

log: logging.Logger = logging.getLogger("ferrosmtp")

SCRYPT_LOG2_N = 15  # 2**15 x r=8: 32 MiB and about 0.1 s a check
SCRYPT_R = 8
SCRYPT_P = 1
BCRYPT_COST = 12
BCRYPT_MAX = 72  # octets bcrypt reads of a password; longer ones are cut (Dovecot too)
_SCRYPT = re.compile(
    r"\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)\Z"
)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}\Z")


def _optional(name: str) -> ModuleType | None:
    try:
        return __import__(name)
    except ImportError:
        return None


_bcrypt = _optional("bcrypt")
_argon2 = _optional("argon2")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * r * n, dklen=32)


def _hash_scrypt(password: bytes) -> str:
    salt = os.urandom(16)
    digest = _scrypt(password, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
    return f"$scrypt$ln={SCRYPT_LOG2_N},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _scrypt_parameters(stored: str) -> tuple[int, int, int, bytes, bytes]:
    m = _SCRYPT.match(stored)
    if m is None:
        raise ValueError("not a $scrypt$ln=..,r=..,p=..$salt$hash string")
    log2_n, r, p = (int(x) for x in m.group(1, 2, 3))
    if not (1 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")
    try:
        return log2_n, r, p, _unb64(m.group(4)), _unb64(m.group(5))
    except ValueError:
        raise ValueError("scrypt salt or hash is not base64") from None


def _verify_scrypt(stored: str, password: bytes) -> bool:
    log2_n, r, p, salt, expected = _scrypt_parameters(stored)
    return hmac.compare_digest(_scrypt(password, salt, log2_n, r, p), expected)


def _need(module: ModuleType | None, scheme: str, package: str) -> ModuleType:
    if module is None:
        raise ValueError(f"{scheme} hashes need the {package} package: pip install {package}")
    return module


def _hash_bcrypt(password: bytes) -> str:
    bcrypt = _need(_bcrypt, "{BLF-CRYPT}", "bcrypt")
    if len(password) > BCRYPT_MAX:
        raise ValueError("bcrypt reads 72 octets of a password at most: use scrypt or argon2id")
    hashed: bytes = bcrypt.hashpw(password, bcrypt.gensalt(BCRYPT_COST))
    return "$2y$" + hashed.decode("ascii")[4:]  # Dovecot writes $2y$, the same algorithm


def _verify_bcrypt(stored: str, password: bytes) -> bool:
    bcrypt = _need(_bcrypt, "{BLF-CRYPT}", "bcrypt")
    ok: bool = bcrypt.checkpw(password[:BCRYPT_MAX], stored.encode("ascii"))
    return ok


def _hash_argon2id(password: bytes) -> str:
    argon2 = _need(_argon2, "{ARGON2ID}", "argon2-cffi")
    hashed: str = argon2.PasswordHasher().hash(password)
    return hashed


def _verify_argon2id(stored: str, password: bytes) -> bool:
    argon2 = _need(_argon2, "{ARGON2ID}", "argon2-cffi")
    if not stored.startswith("$argon2id$"):
        raise ValueError("not an $argon2id$ string")
    try:
        return bool(argon2.PasswordHasher().verify(stored, password))
    except argon2.exceptions.VerificationError:
        return False


def _verify_sha256(stored: str, password: bytes) -> bool:
    return hmac.compare_digest(hashlib.sha256(password).hexdigest(), stored.lower())


# scheme -> (make a hash, check a password against one); the names are Dovecot's
SCHEMES: dict[str, tuple[Callable[[bytes], str] | None, Callable[[str, bytes], bool]]] = {
    "SCRYPT": (_hash_scrypt, _verify_scrypt),
    "BLF-CRYPT": (_hash_bcrypt, _verify_bcrypt),
    "ARGON2ID": (_hash_argon2id, _verify_argon2id),
    "SHA256": (None, _verify_sha256),  # read only: unsalted
}
_ALIASES = {"BCRYPT": "BLF-CRYPT", "ARGON2": "ARGON2ID"}


def hash_password(password: str | bytes, scheme: str = "SCRYPT") -> str:
    """``{SCHEME}hash`` of ``password`` with a fresh salt (SCRYPT, BLF-CRYPT or ARGON2ID).
    ValueError for an unknown scheme, or one whose package is not installed."""
    name = _ALIASES.get(scheme.upper(), scheme.upper())
    make = SCHEMES.get(name, (None, None))[0]
    if make is None:
        raise ValueError(f"cannot write {scheme} hashes; use SCRYPT, BLF-CRYPT or ARGON2ID")
    data = password.encode("utf-8") if isinstance(password, str) else password
    return "{" + name + "}" + make(data)


def _split(secret: str) -> tuple[str | None, str]:
    if secret.startswith("{") and "}" in secret:
        scheme, _, rest = secret[1:].partition("}")
        return scheme.upper(), rest
    return None, secret


def check_entry(secret: str) -> str | None:
    """Why ``secret`` cannot be used (unknown scheme, malformed, package missing), or
    None. A bare password or ``{sha256}`` is usable (with a warning at load)."""
    scheme, rest = _split(secret)
    if scheme is None:
        return None
    if scheme not in SCHEMES:
        return f"unknown password scheme {{{scheme}}}"
    try:  # the form only: checking a password here would cost a slow hash per user
        if scheme == "SHA256" and not _SHA256_HEX.match(rest.lower()):
            return "{sha256} needs 64 hex digits"
        if scheme == "SCRYPT":
            _scrypt_parameters(rest)
        elif scheme == "BLF-CRYPT":
            _need(_bcrypt, "{BLF-CRYPT}", "bcrypt")
            if not _BCRYPT.match(rest):
                return "not a $2y$ bcrypt string"
        elif scheme == "ARGON2ID":
            _need(_argon2, "{ARGON2ID}", "argon2-cffi")
            if not rest.startswith("$argon2id$"):
                return "not an $argon2id$ string"
    except ValueError as error:
        return str(error)
    return None


def verify(secret: str, password: bytes) -> bool:
    """Whether ``password`` matches the stored ``secret`` (any scheme above)."""
    scheme, rest = _split(secret)
    if scheme is None:
        return hmac.compare_digest(rest.encode("utf-8"), password)
    check = SCHEMES.get(scheme)
    if check is None:
        return False
    try:
        return check[1](rest, password)
    except ValueError:
        return False


class FileAuthenticator:
    """Check AUTH PLAIN/LOGIN credentials against a ``user:secret`` file (see the module
    documentation); the authenticator ``ferrosmtp serve --auth-file`` uses."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.users: dict[bytes, str] = {}
        self._dummy = hash_password(os.urandom(16))  # what an unknown user is checked against
        self.reload()

    def reload(self) -> int:
        """Read the file again (SIGHUP); on an error the users stay as they were. Raises
        OSError or ValueError naming the file (and the line); returns the user count."""
        users: dict[bytes, str] = {}
        weak: list[str] = []
        try:
            text = self.path.read_text("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{self.path}: not UTF-8 text") from None
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, secret = line.partition(":")
            if not sep or not user:
                raise ValueError(f"{self.path}:{number}: expected 'user:password'")
            problem = check_entry(secret)
            if problem is not None:
                raise ValueError(f"{self.path}:{number}: {problem}")
            if _split(secret)[0] in (None, "SHA256"):
                weak.append(user)
            users[user.encode("utf-8")] = secret
        if weak:
            log.warning(
                "%s: %d user(s) with a plaintext or unsalted password (%s); write salted "
                "hashes with: ferrosmtp passwd --file %s USER",
                *(self.path, len(weak), ", ".join(weak[:5]), self.path),
            )
        self.users = users
        return len(users)

    def check(self, login: bytes, password: bytes) -> bool:
        """Whether ``password`` is the one stored for ``login``."""
        secret = self.users.get(login)
        # Same work whether or not the user exists: no timing oracle for user names.
        ok = verify(secret if secret is not None else self._dummy, password)
        return ok and secret is not None

    async def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        """aiosmtpd's authenticator call: an AuthResult. The client may only act as
        itself (an AUTH PLAIN authorization identity other than its login is refused)."""
        from ferrosmtp.server import AuthResult
        from ferrosmtp.server.peers import client_peer, peer_text

        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, self.check, auth_data.login, auth_data.password)
        client = peer_text(client_peer(session.peer, getattr(session, "proxy_data", None)))
        if ok:
            log.info("%s authenticated as %r", client, auth_data.login.decode("utf-8", "replace"))
        else:
            log.warning("%s failed AUTH %s", client, mechanism)
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)
