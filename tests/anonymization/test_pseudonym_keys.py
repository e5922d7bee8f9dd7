from __future__ import annotations

import stat
from pathlib import Path

import pytest

from slicebox_lab.anonymization import PseudonymKeys


def test_load_or_create_makes_a_private_32_byte_secret_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pseudonym.key"
    first = PseudonymKeys.load_or_create(path)
    assert len(path.read_bytes()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PseudonymKeys.load_or_create(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["pseudonym.key"]  # no temporary file left


def test_a_damaged_secret_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="32-byte"):
        PseudonymKeys.load_or_create(path)


def test_the_secret_is_not_in_repr() -> None:
    keys = PseudonymKeys(b"s" * 32)
    assert "sss" not in repr(keys)


def test_derivations_are_deterministic_and_keyed() -> None:
    a, b = PseudonymKeys(b"a" * 32), PseudonymKeys(b"b" * 32)
    uid = a.uid("1.2.840.113619.2.55.3")
    assert uid == a.uid("1.2.840.113619.2.55.3") != b.uid("1.2.840.113619.2.55.3")
    assert uid.startswith("2.25.") and len(uid) <= 64 and uid[5:].isdigit()
    name, patient_id = a.patient_pseudonym("Doe^John", "PID-1")
    assert (name, patient_id) == a.patient_pseudonym("Doe^John ", "PID-1")
    assert name.startswith("ANON^") and patient_id.startswith("ANON-") and name[5:] == patient_id[5:]
    assert a.patient_pseudonym("Doe^John", "PID-2") != (name, patient_id)
    assert b.patient_pseudonym("Doe^John", "PID-1") != (name, patient_id)
    offsets = {a.date_offset_days("Doe^John", f"PID-{n}") for n in range(200)}
    assert min(offsets) >= 1 and max(offsets) <= 3650 and len(offsets) > 150
