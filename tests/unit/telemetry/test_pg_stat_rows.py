"""pg_stat_* rows -> telemetry metrics (aifb.telemetry.sources.pg_rows_metrics): the present
path of pg_stat_io (PostgreSQL 16+; the machine's server is 15, so its rows are written here
as PostgreSQL 16 documents them); the absent path runs against the real server in
tests/integration/test_telemetry.py::test_postgres_transactions_match_the_clients_requests."""

from datetime import datetime, timezone

from aifb.telemetry.sources import PG_IO, pg_rows_metrics

# two rows of PostgreSQL 16's pg_stat_io (columns as in its documentation, "pg_stat_io")
PG16_IO_ROWS = [
    {"backend_type": "client backend", "object": "relation", "context": "normal",
     "reads": 120, "read_time": 1.5, "writes": 4, "write_time": 0.25, "writebacks": 0,
     "writeback_time": 0.0, "extends": 3, "extend_time": 0.125, "op_bytes": 8192, "hits": 9000,
     "evictions": 2, "reuses": None, "fsyncs": 0, "fsync_time": 0.0,
     "stats_reset": datetime(2026, 1, 1, tzinfo=timezone.utc)},
    {"backend_type": "checkpointer", "object": "relation", "context": "normal",
     "reads": None, "read_time": None, "writes": 50, "write_time": 2.0, "writebacks": 50,
     "writeback_time": 0.5, "extends": None, "extend_time": None, "op_bytes": 8192,
     "hits": None, "evictions": None, "reuses": None, "fsyncs": 7, "fsync_time": 1.0,
     "stats_reset": datetime(2026, 1, 1, tzinfo=timezone.utc)},
]


def test_pg_stat_io_rows_become_labelled_counters():
    prefix, sql, labels = PG_IO
    assert sql == "SELECT * FROM pg_stat_io"
    out = pg_rows_metrics(prefix, PG16_IO_ROWS, labels)
    by = {(m.name, m.labels["backend_type"]): m for m in out}
    client = {"backend_type": "client backend", "object": "relation", "context": "normal"}
    assert by[("io_reads", "client backend")].labels == client
    assert by[("io_reads", "client backend")].value == 120.0
    assert by[("io_hits", "client backend")].kind == "counter"
    assert by[("io_op_bytes", "checkpointer")].kind == "gauge"     # a unit, not a count
    assert by[("io_fsyncs", "checkpointer")].value == 7.0
    # NULL (not possible in that combination) and the timestamp are left out
    assert ("io_reads", "checkpointer") not in by and ("io_reuses", "client backend") not in by
    assert not any(m.name == "io_stats_reset" for m in out)
    assert len(out) == 13 + 7   # the non-NULL numeric columns of each row


def test_database_rows_keep_numbackends_a_gauge_and_leave_out_datid():
    row = {"datid": 5, "datname": "aifb", "numbackends": 3, "xact_commit": 10, "xact_rollback": 0,
           "blks_read": 1, "stats_reset": None}
    out = {m.name: m for m in pg_rows_metrics("database", [row], ("datname",))}
    assert set(out) == {"database_numbackends", "database_xact_commit", "database_xact_rollback",
                        "database_blks_read"}
    assert out["database_numbackends"].kind == "gauge" and out["database_xact_commit"].kind == "counter"
    assert out["database_xact_commit"].labels == {"datname": "aifb"}
