"""The node secret and everything derived from it: anonymous UIDs, patient pseudonyms, date offsets.

Derivation instead of a mapping table: the same input always gives the same output on this node
(across runs and processes), so referential integrity and longitudinal consistency need no state
beyond one 32-byte secret. Rotating or losing the secret breaks that consistency, and anyone holding
the secret can test guesses of identities, so the secret is as sensitive as the data: it lives in a
0600 file, is never logged, and never appears in ``repr``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SECRET_SIZE", "PseudonymKeys"]

SECRET_SIZE = 32
MAX_DATE_OFFSET_DAYS = 3650


@dataclass(frozen=True)
class PseudonymKeys:
    """HMAC-SHA256 keyed derivations of anonymous values from the node secret."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValueError("the pseudonym secret must be at least 16 bytes")

    @classmethod
    def generate(cls) -> PseudonymKeys:
        return cls(secrets.token_bytes(SECRET_SIZE))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> PseudonymKeys:
        """Read the secret at ``path``, or create it (random, mode 0600) if absent.

        Creation is atomic and race-free: the secret is written and fsynced under a temporary name,
        then hard-linked to ``path``; if another process linked first, its secret is used.
        """
        path = Path(path)
        try:
            return cls._read(path)
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(SECRET_SIZE))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process won the race; use its secret
        finally:
            tmp.unlink(missing_ok=True)
        return cls._read(path)

    @classmethod
    def _read(cls, path: Path) -> PseudonymKeys:
        secret = path.read_bytes()
        if len(secret) != SECRET_SIZE:
            raise ValueError(f"{path} does not hold a {SECRET_SIZE}-byte pseudonym secret")
        return cls(secret)

    def _digest(self, *parts: str) -> bytes:
        # NUL-separated so ("AB", "C") and ("A", "BC") differ
        message = b"\x00".join(part.encode("utf-8") for part in parts)
        return hmac.new(self.secret, message, hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """``2.25.<first 16 bytes of HMAC-SHA256(secret, UID) as an integer>``: same UID, same result."""
        digest = hmac.new(self.secret, original.encode("ascii", "replace"), hashlib.sha256).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def _patient_digest(self, PatientName: str, PatientID: str) -> bytes:
        return self._digest("patient", PatientName.strip(), PatientID.strip())

    def patient_pseudonym(self, PatientName: str, PatientID: str) -> tuple[str, str]:
        """(PatientName, PatientID) pseudonyms, e.g. ("ANON^K5Q…", "ANON-K5Q…"), from the real pair."""
        code = base64.b32encode(self._patient_digest(PatientName, PatientID)[:10]).decode("ascii")
        return f"ANON^{code}", f"ANON-{code}"

    def date_offset_days(self, PatientName: str, PatientID: str) -> int:
        """Days (1…3650) by which this patient's dates move into the past under Modified Dates."""
        digest = self._digest("date-offset", PatientName.strip(), PatientID.strip())
        return 1 + int.from_bytes(digest[:8], "big") % MAX_DATE_OFFSET_DAYS
