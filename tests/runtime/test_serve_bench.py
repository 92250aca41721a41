"""``daefr-bench serve``: a real server from .venv-serve against in-process calls, one report."""

from __future__ import annotations

import json

import pytest

from daefr.runtime.bench import main

pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (pip install 'daefr[client]')")
from daefr.runtime.serve.launch import serve_python  # noqa: E402

TINY = ["serve", "--preset", "tiny", "--random-weights", "--threads", "1"]


def test_bench_serve_reports_every_mode_with_ratios(tmp_path, capsys) -> None:
    if serve_python() is None:
        pytest.skip("no interpreter with PyTriton: bash scripts/setup.sh makes .venv-serve")
    out = tmp_path / "serve.json"
    argv = [
        *TINY,
        "--clients",
        "3",
        "--requests",
        "2",
        "--warmup",
        "0",
        "--max-batch-size",
        "4",
        "--out",
        str(out),
        "-q",
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    rows = {row["mode"]: row for row in report["results"]}
    assert list(rows) == ["in-process", "in-proc B3", "http", "grpc"]
    for row in rows.values():
        assert row["faces"] == 3 * 2 and row["faces_per_s"] > 0
        assert row["latency_ms"]["p99"] >= row["latency_ms"]["p50"] > 0
    assert rows["in-process"]["faces_per_s_ratio"] == 1.0
    assert rows["http"]["faces_per_s_ratio"] == pytest.approx(
        rows["http"]["faces_per_s"] / rows["in-process"]["faces_per_s"]
    )
    assert 1 <= rows["grpc"]["mean_batch"] <= 4
    table = (tmp_path / "serve.txt").read_text()
    assert table == capsys.readouterr().out and "grpc" in table


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--clients", "0"], "--clients must be >= 1"),
        (["--protocols", "udp"], "choose from http,grpc"),
        (["--faces", "9", "--max-batch-size", "8"], "over the server's --max-batch-size"),
        (["--http-url", "127.0.0.1:1"], "needs --grpc-url"),
    ],
)
def test_bench_serve_bad_flags_exit_2(flags, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*TINY, *flags])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_bench_serve_without_a_server_is_one_line_exit_1(capsys) -> None:
    from daefr.runtime.serve.launch import free_ports

    (port,) = free_ports(1)
    argv = [
        *TINY,
        "--http-url",
        f"127.0.0.1:{port}",
        "--protocols",
        "http",
        "--requests",
        "1",
        "--warmup",
        "0",
        "-q",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("daefr-bench serve: no daefr-serve is ready") and "\n" not in err
