"""Sample counting and URL parsing of the dataset monitor."""

from __future__ import annotations

from pathlib import Path

import pytest

from sedna_lc.datasets import DatasetError, count_samples, parse_source
from sedna_lc.datasets.counting import count_lines


def test_count_lines_ignores_blank_lines_and_chunk_boundaries() -> None:
    data = b"a\n\n  \nb\r\nc"
    expected = 3
    assert count_lines([data]) == expected
    # Every possible split into two chunks, and byte by byte.
    for cut in range(len(data) + 1):
        assert count_lines([data[:cut], data[cut:]]) == expected
    assert count_lines([bytes([b]) for b in data]) == expected
    assert count_lines([]) == 0
    assert count_lines([b"\n\n"]) == 0


def test_txt_csv_dir(tmp_path: Path) -> None:
    txt = tmp_path / "index.txt"
    txt.write_text("img/1.jpg 0\nimg/2.jpg 1\n\nimg/3.jpg 1\n")
    csv = tmp_path / "data.csv"
    csv.write_text("x,y\n1,2\n3,4\n")
    folder = tmp_path / "images"
    (folder / "sub" / "deeper").mkdir(parents=True)
    for rel in ("a.jpg", "b.jpg", "sub/c.jpg", "sub/deeper/d.jpg"):
        (folder / rel).write_bytes(b"x")
    (folder / "link.jpg").symlink_to(folder / "a.jpg")  # a symlink is not a regular file

    assert count_samples(parse_source(str(txt)), "txt") == 3
    assert count_samples(parse_source(f"file://{csv}"), "csv") == 2
    assert count_samples(parse_source(str(folder)), "dir") == 4
    header_only = tmp_path / "h.csv"
    header_only.write_text("x,y\n")
    assert count_samples(parse_source(str(header_only)), "csv") == 0


def test_large_file_counted_by_streaming(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    line = b"sample/path/%07d.jpg 1\n"
    with big.open("wb") as out:
        for block in range(20):
            out.write(b"".join(line % (block * 10_000 + i) for i in range(10_000)))
    assert count_samples(parse_source(str(big)), "txt") == 200_000


def test_errors_name_the_url_and_field(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(DatasetError, match=r"nope\.txt does not exist"):
        count_samples(parse_source(str(missing)), "txt")
    with pytest.raises(DatasetError, match=r"spec\.format: 'json' is not one of txt, csv, dir"):
        count_samples(parse_source(str(missing)), "json")
    (tmp_path / "f").write_text("x")
    with pytest.raises(DatasetError, match="is not a directory"):
        count_samples(parse_source(str(tmp_path / "f")), "dir")
    with pytest.raises(DatasetError, match="unsupported scheme 'http'"):
        parse_source("http://example.com/a.txt")
    with pytest.raises(DatasetError, match="s3://BUCKET/KEY"):
        parse_source("s3://bucket-only")
    with pytest.raises(DatasetError, match="lack 's3-endpoint'"):
        count_samples(parse_source("s3://b/k.txt"), "txt", {})
    with pytest.raises(DatasetError, match="lack SECRET_ACCESS_KEY"):
        count_samples(
            parse_source("s3://b/k.txt"), "txt", {"s3-endpoint": "h:1", "ACCESS_KEY_ID": "a"}
        )


def test_rootfs_prefix(tmp_path: Path) -> None:
    host = tmp_path / "rootfs"
    (host / "data").mkdir(parents=True)
    (host / "data" / "a.txt").write_text("1\n2\n")
    source = parse_source("/data/a.txt", rootfs=host)
    assert source.path == host / "data" / "a.txt"
    assert count_samples(source, "txt") == 2
    assert parse_source("file:///data/a.txt", rootfs=host).path == host / "data" / "a.txt"
    # Relative paths are not host paths: no prefix.
    assert parse_source("rel/a.txt", rootfs=host).path == Path("rel/a.txt")
