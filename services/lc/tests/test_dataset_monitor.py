"""The dataset monitor: report only on change, across restarts, errors and recovery, S3."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_lc.datasets import DatasetMonitor

INTERVAL = 0.05


def dataset(url: str, fmt: str = "txt", name: str = "ds", uid: str = "u1") -> ResourceObject:
    return ResourceObject(
        kind="Dataset",
        name=name,
        namespace="default",
        uid=uid,
        spec={"url": url, "format": fmt, "nodeName": "edge-1"},
    )


@pytest.fixture
async def monitor(sink: Any, tmp_path: Path) -> AsyncIterator[DatasetMonitor]:
    mon = DatasetMonitor(sink, tmp_path / "state", interval=INTERVAL)
    yield mon
    await mon.close()


async def test_reports_count_only_when_it_changes(
    monitor: DatasetMonitor, sink: Any, tmp_path: Path, eventually: Any
) -> None:
    data = tmp_path / "index.txt"
    data.write_text("a\nb\n")
    obj = dataset(str(data))
    await monitor.apply(obj, {})
    await monitor.apply(obj, {})  # idempotent
    await eventually(lambda: sink.of("dataset"), what="first report")
    first = sink.reports[0]
    assert first.owner.kind == "Dataset"
    assert first.owner.name == "ds"
    assert first.owner.uid == "u1"
    assert first.dataset.number_of_samples == 2
    assert not first.dataset.error
    assert first.dataset.update_time.seconds > 0
    # Several more polls: no new report while nothing changes.
    for _ in range(3):
        await monitor.check_now(obj.key)
    assert len(sink.reports) == 1
    data.write_text("a\nb\nc\n")
    await eventually(lambda: len(sink.reports) == 2, what="report of the new count")
    assert sink.reports[1].dataset.number_of_samples == 3


async def test_restart_does_not_report_again(sink: Any, tmp_path: Path, eventually: Any) -> None:
    data = tmp_path / "d.csv"
    data.write_text("h\n1\n2\n")
    obj = dataset(str(data), "csv")
    first = DatasetMonitor(sink, tmp_path / "state", interval=INTERVAL)
    await first.apply(obj, {})
    await eventually(lambda: sink.reports, what="first report")
    await first.close()

    second = DatasetMonitor(sink, tmp_path / "state", interval=INTERVAL)
    await second.apply(obj, {})
    await second.check_now(obj.key)
    await second.check_now(obj.key)
    assert len(sink.reports) == 1
    # A new incarnation of the same name (other uid) is reported.
    await second.apply(dataset(str(data), "csv", uid="u2"), {})
    await eventually(lambda: len(sink.reports) == 2, what="report for the new uid")
    await second.close()


async def test_missing_file_reports_error_once_then_recovers(
    monitor: DatasetMonitor, sink: Any, tmp_path: Path, eventually: Any
) -> None:
    data = tmp_path / "late.txt"
    obj = dataset(str(data))
    await monitor.apply(obj, {})
    await eventually(lambda: sink.reports, what="error report")
    error = sink.reports[0].dataset.error
    assert str(data) in error
    assert "does not exist" in error
    for _ in range(3):
        await monitor.check_now(obj.key)
    assert len(sink.reports) == 1  # reported once, still retrying
    data.write_text("x\n")
    await eventually(lambda: len(sink.reports) == 2, what="recovery report")
    assert sink.reports[1].dataset.number_of_samples == 1
    assert not sink.reports[1].dataset.error


async def test_unknown_format_names_the_field(
    monitor: DatasetMonitor, sink: Any, tmp_path: Path, eventually: Any
) -> None:
    await monitor.apply(dataset(str(tmp_path), fmt="parquet"), {})
    await eventually(lambda: sink.reports, what="error report")
    assert "spec.format: 'parquet'" in sink.reports[0].dataset.error


async def test_sink_failure_is_retried(
    monitor: DatasetMonitor, sink: Any, tmp_path: Path, eventually: Any
) -> None:
    data = tmp_path / "a.txt"
    data.write_text("1\n")
    sink.fail = True
    await monitor.apply(dataset(str(data)), {})
    with pytest.raises(RuntimeError, match="outbox unavailable"):
        await monitor.check_now(ObjectKey("Dataset", "default", "ds"))
    assert not sink.reports
    sink.fail = False
    await eventually(lambda: sink.reports, what="report after the sink recovered")


async def test_remove_and_resync(monitor: DatasetMonitor, sink: Any, tmp_path: Path) -> None:
    data = tmp_path / "a.txt"
    data.write_text("1\n")
    await monitor.apply(dataset(str(data), name="a"), {})
    await monitor.apply(dataset(str(data), name="b"), {})
    await monitor.resync([ObjectKey("Dataset", "default", "a"), ObjectKey("Worker", "x", "y")])
    assert monitor.keys() == [ObjectKey("Dataset", "default", "a")]
    await monitor.remove(ObjectKey("Dataset", "default", "a"))
    await monitor.remove(ObjectKey("Dataset", "default", "unknown"))
    assert monitor.keys() == []


# ---------------------------------------------------------------------------- S3 (moto server)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    server_mod = pytest.importorskip(
        "moto.server", reason="moto[server] is not installed: no local S3 server for this test"
    )
    pytest.importorskip("minio", reason="the minio client is not installed")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()


async def test_s3_txt_and_dir(
    s3_server: str, monitor: DatasetMonitor, sink: Any, eventually: Any
) -> None:
    import io

    from minio import Minio

    client = Minio(s3_server, access_key="test", secret_key="test", secure=False)
    client.make_bucket("data")
    body = b"".join(b"s3/img%05d.jpg\n" % i for i in range(5000))
    client.put_object("data", "train/index.txt", io.BytesIO(body), len(body))
    for i in range(3):
        client.put_object("data", f"images/{i}.jpg", io.BytesIO(b"x"), 1)
    client.put_object("data", "images/sub/", io.BytesIO(b""), 0)  # a folder marker

    creds = {
        "s3-endpoint": s3_server,
        "s3-usehttps": "0",
        "ACCESS_KEY_ID": "test",
        "SECRET_ACCESS_KEY": "test",
    }
    await monitor.apply(dataset("s3://data/train/index.txt", name="txt"), creds)
    await monitor.apply(dataset("s3://data/images", "dir", name="dir"), creds)
    await monitor.apply(dataset("s3://data/missing.txt", name="missing"), creds)
    await eventually(lambda: len(sink.reports) == 3, what="three S3 reports")
    by_name = {r.owner.name: r.dataset for r in sink.reports}
    assert by_name["txt"].number_of_samples == 5000
    assert by_name["dir"].number_of_samples == 3
    assert "s3://data/missing.txt" in by_name["missing"].error
    assert "NoSuchKey" in by_name["missing"].error
