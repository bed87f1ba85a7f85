"""`gpuscale load` usage errors (one line, exit 2) and the PNG plots."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gpuscale import loadgen
from gpuscale.loadgen import LoadResult, LoadSpec, MetricsSample, RequestRecord
from gpuscale.plot import plot_run, plot_runs

URL = "http://127.0.0.1:9/v2/models/sleep/infer"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int | str | None, list[str]]:
    try:
        code: int | str | None = loadgen.main(list(args))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ftp://example.com/"], "URL must be an http:// or https:// URL, got 'ftp://example.com/'"),
        (["localhost:8000/infer"], "URL must be an http:// or https:// URL"),
        ([], "the following arguments are required: URL"),
        (["-c", "0", URL], "argument -c/--concurrency: must be a positive number, got 0"),
        (["-q", "-5", URL], "argument -q/--rate: must be a positive number, got -5"),
        (["-q", "nan", URL], "argument -q/--rate: must be a positive number, got nan"),
        (["-n", "x", URL], "argument -n/--requests: invalid int value: 'x'"),
        (["-z", "0", URL], "argument -z/--duration: must be a positive number"),
        (["--timeout", "0", URL], "argument --timeout: must be a positive number"),
        (["--max-outstanding", "0", URL], "argument --max-outstanding: must be a positive number"),
        (["--sample-interval", "-1", URL], "argument --sample-interval: must be a positive number"),
        (["-d", "{not json", URL], "--body is not JSON: Expecting property name"),
        (["-D", "/nonexistent/body.json", URL], "--body-file: cannot read /nonexistent/body.json"),
        (
            ["-d", "{}", "-D", "body.json", URL],
            "argument -D/--body-file: not allowed with argument -d/--body",
        ),
        (["-H", "NoColon", URL], "-H must be 'Name: value', got 'NoColon'"),
        (["--metrics-url", "gateway:9000", URL], "--metrics-url must be an http:// or https:// URL"),
        (["--json", "/nonexistent/dir/r.json", URL], "--json: no such directory: /nonexistent/dir"),
        (["--plot", "/nonexistent/dir/r.png", URL], "--plot: no such directory: /nonexistent/dir"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, lines = load_cli(capsys, *args)
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("gpuscale load: error: ")
    assert message in lines[0]


def test_a_body_file_that_is_not_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text("seconds=1")
    code, lines = load_cli(capsys, "-D", str(body), URL)
    assert code == 2
    assert lines == [
        f"gpuscale load: error: --body-file {body} is not JSON: Expecting value: line 1 column 1 (char 0)"
    ]


def test_plot_without_matplotlib_says_how_to_install_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a)
    )
    code, lines = load_cli(capsys, "--plot", str(tmp_path / "r.png"), URL)
    assert code == 2
    assert lines == ["gpuscale load: error: --plot needs matplotlib: pip install 'gpuscale[plot]'"]


def test_flags_make_the_spec(tmp_path: Path) -> None:
    from inference_app.cli import OneLineErrorParser

    body = tmp_path / "body.json"
    body.write_text('{"parameters": {"seconds": 0.5}}')
    parser = OneLineErrorParser(prog="gpuscale load")
    loadgen.add_arguments(parser)
    args = parser.parse_args(
        ["-q", "2.5", "--poisson", "--seed", "4", "-z", "60", "-D", str(body), "-H", "X-Tenant:  a: b", URL]
    )
    spec = loadgen.spec_from_args(args)
    assert spec == LoadSpec(
        URL,
        method="POST",
        body=b'{"parameters": {"seconds": 0.5}}',
        headers={"X-Tenant": "a: b"},
        rate=2.5,
        poisson=True,
        seed=4,
        duration=60.0,
    )
    assert spec.open_loop
    assert spec.requests is None
    plain = loadgen.spec_from_args(parser.parse_args([URL]))
    assert (plain.method, plain.requests, plain.concurrency, plain.timeout) == ("GET", 200, 10, 900.0)


def test_the_command_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gpuscale.loadgen", "-c", "0", URL],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "gpuscale load: error: argument -c/--concurrency: must be a positive number, got 0 (see --help)"
    ]


def _result(samples: bool) -> LoadResult:
    records = [
        RequestRecord(
            start=0.05 * i, latency=0.5 + 0.01 * i, status=200 if i % 7 else 429, error=None, replica=None
        )
        for i in range(60)
    ]
    records.append(RequestRecord(start=1.0, latency=0.002, status=0, error="ConnectError: x", replica=None))
    metrics = [
        MetricsSample(
            0.5 * i,
            {
                "gpuscale_queue_depth": float(i % 4),
                "gpuscale_inflight_requests": 1.0,
                "gpuscale_slots": 1.0,
                'gpuscale_gateway_replicas{state="ready"}': float(1 + i // 3),
            },
        )
        for i in range(8)
    ]
    return LoadResult(LoadSpec(URL), records, metrics if samples else [], wall_seconds=3.6)


def png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk, right after the signature


@pytest.mark.parametrize("samples", [True, False])
def test_plot_run_writes_a_png(tmp_path: Path, samples: bool) -> None:
    path = tmp_path / "run.png"
    plot_run(_result(samples), str(path), title="test")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000


def test_plot_run_with_no_records(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    plot_run(LoadResult(LoadSpec(URL), []), str(path))
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_runs_side_by_side(tmp_path: Path) -> None:
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    plot_run(_result(True), str(one))
    plot_runs([("policy A", _result(True)), ("policy B", _result(False))], str(two))
    assert two.read_bytes().startswith(PNG_SIGNATURE)
    # two columns: the image is wider than one run's
    assert png_width(two) > 1.5 * png_width(one)
    with pytest.raises(ValueError, match="at least one run"):
        plot_runs([], str(tmp_path / "none.png"))
