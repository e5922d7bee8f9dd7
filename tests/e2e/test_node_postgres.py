"""The whole node on PostgreSQL: configuration (database_url), not a code change."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from generators import ct_bytes
from nodeproc import start_node
from pg import pg_engine, postgresql_url  # noqa: F401  (fixtures)

DICOM = {"Content-Type": "application/dicom"}


def test_node_runs_on_postgresql(tmp_path: Path, pg_engine: sa.Engine):  # noqa: F811
    url = pg_engine.url.render_as_string(hide_password=False)
    node = start_node(tmp_path / "node", tmp_path, "secret-token", f"--SliceboxApp.database_url={url}")
    try:
        s = node.session()
        assert s.get(node.api + "/system/information").json()["database"] == "postgresql"
        ids = []
        for n in range(3):
            r = s.post(node.api + "/images", data=ct_bytes(PatientName=f"Pg^{n}", PatientID=f"PG{n}"), headers=DICOM)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        wildcard = {"property_name": "PatientName", "operator": "wildcard", "property_value": "pg^*"}
        query = {"query_properties": [wildcard]}
        assert len(s.post(node.api + "/metadata/patients/query", json=query).json()) == 3
        r = s.post(node.api + "/import/sessions", json={"name": "batch"})
        assert r.status_code == 201
        assert s.get(node.api + "/jobs").status_code == 200
        assert s.delete(f"{node.api}/images/{ids[0]}").status_code == 204
    finally:
        node.stop()
    # the rows are in PostgreSQL, not in a SQLite file
    assert not (tmp_path / "node" / "slicebox.sqlite").exists()
    with pg_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM images")).scalar() == 2
        assert conn.execute(sa.text("SELECT count(*) FROM import_sessions")).scalar() == 1
