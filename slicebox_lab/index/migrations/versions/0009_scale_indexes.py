"""Indexes for 10^6 instances: case-insensitive name/ID wildcards and keyset paging of children.

* ``patients.PatientName`` / ``PatientID`` wildcards are case-insensitive: an index on ``lower(column)``,
  on PostgreSQL with ``text_pattern_ops`` so that ``lower(x) LIKE 'abc%'`` reads a range in any locale;
  SQLite reads it through the ``lower(x) >= 'abc' AND lower(x) < 'abd'`` range query.py adds.
* ``(parent_id, id)`` on studies, series and images: the children of one parent in id order, read
  as one index range, also from a keyset cursor (``id > after_id``) without sorting.

Revision ID: 0009_scale_indexes
Revises: 0008_users_audit
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_scale_indexes"
down_revision: str | Sequence[str] | None = "0008_users_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CASE_INSENSITIVE = ("PatientName", "PatientID")
_CHILDREN = (("studies", "patient_id"), ("series", "study_id"), ("images", "series_id"))


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name in _CASE_INSENSITIVE:
        expression = f'lower("{name}") text_pattern_ops' if postgresql else f'lower("{name}")'
        op.create_index(f"ix_patients_{name}_lower", "patients", [sa.text(expression)])
    for table, parent in _CHILDREN:
        op.create_index(f"ix_{table}_{parent}_id", table, [parent, "id"])


def downgrade() -> None:
    for table, parent in reversed(_CHILDREN):
        op.drop_index(f"ix_{table}_{parent}_id", table_name=table)
    for name in reversed(_CASE_INSENSITIVE):
        op.drop_index(f"ix_patients_{name}_lower", table_name="patients")
