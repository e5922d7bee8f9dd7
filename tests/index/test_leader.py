"""One leader among servers sharing a PostgreSQL database; every server leads on SQLite."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pg import pg_engine, postgresql_url  # noqa: F401

from slicebox_lab.index import create_engine, sqlite_url
from slicebox_lab.index.leader import Leadership


@pytest.fixture
def servers(pg_engine: sa.Engine) -> Iterator[Callable[[], Leadership]]:  # noqa: F811
    """Make a server's Leadership, on an engine of its own (as another process would have)."""
    made: list[tuple[Leadership, sa.Engine]] = []

    def make() -> Leadership:
        engine = create_engine(pg_engine.url.render_as_string(hide_password=False))
        leadership = Leadership(engine, retry_interval=0.1)
        made.append((leadership, engine))
        return leadership

    yield make
    for leadership, engine in made:
        leadership.close()
        engine.dispose()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.postgres
def test_exactly_one_server_leads_and_another_takes_over(servers: Callable[[], Leadership]) -> None:
    first, second, third = servers(), servers(), servers()
    assert [first.is_leader(), second.is_leader(), third.is_leader()] == [True, False, False]
    time.sleep(0.5)  # the others keep trying, and keep failing while the first leads
    assert [first.is_leader(), second.is_leader(), third.is_leader()] == [True, False, False]
    first.close()
    wait_until(lambda: second.is_leader() or third.is_leader())
    time.sleep(0.3)
    assert [second.is_leader(), third.is_leader()].count(True) == 1
    assert not first.is_leader()


@pytest.mark.postgres
def test_a_leader_whose_session_dies_stops_leading(servers: Callable[[], Leadership], pg_engine: sa.Engine) -> None:  # noqa: F811
    first, second = servers(), servers()
    assert first.is_leader() and not second.is_leader()
    # the database ends the leader's session (as a network cut or a server restart would)
    with pg_engine.connect() as conn:
        killed = (
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND objid = :key AND granted"
                ),
                {"key": 0x5B0C_0003},
            )
            .scalars()
            .all()
        )
        conn.commit()
    assert killed == [True]
    wait_until(lambda: second.is_leader())
    wait_until(lambda: not first.is_leader())


def test_every_server_leads_on_sqlite(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path / "index.sqlite"))
    try:
        one, two = Leadership(engine), Leadership(engine)
        assert one.is_leader() and two.is_leader()
        one.close()
        two.close()
    finally:
        engine.dispose()
