"""`gpuscale bench`: a run prints its table; bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gpuscale.cli import main

SHORT = ["--trace", "spike", "--duration", "300", "--at", "120", "--length", "30", "--warmup", "60"]


def test_a_short_run_prints_the_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    code = main(["bench", *SHORT, "--policies", "gpuscale,hpa,kpa", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| autoscaler | p50 | p95 |" in printed
    for label in ("| gpuscale |", "| HPA |", "| Knative KPA |"):
        assert label in printed
    figures = json.loads(out.read_text())
    assert set(figures["runs"]) == {"gpuscale", "hpa", "kpa"}
    assert figures["runs"]["gpuscale"]["replica_seconds"] >= figures["runs"]["gpuscale"]["work"]


def test_ours_with_a_setting_changed(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", *SHORT, "--policies", "gpuscale", "--set", "targetPerReplica=0.8"])
    assert code == 0
    assert "| gpuscale, targetPerReplica 0.8 |" in capsys.readouterr().out


def test_a_replay(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("timestamp,job_seconds\n" + "".join(f"{t * 0.5},1\n" for t in range(200)))
    assert main(["bench", "--trace", "replay", "--csv", str(log), "--policies", "hpa"]) == 0
    assert "replay of log.csv: 200 requests" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["--startup", "soon"], "--startup must be SECONDS or LOW-HIGH"),
        (["--startup", "90-30"], "low before high"),
        (["--policies", "gpuscale,vpa"], "unknown autoscaler 'vpa'"),
        (["--policies", ","], "names no autoscaler"),
        (["--trace", "replay"], "--trace replay needs --csv FILE"),
        (["--csv", "x.csv"], "--csv goes with --trace replay"),
        (["--trace", "replay", "--csv", "/nonexistent/x.csv"], "cannot read"),
        (["--write-doc"], "--write-doc goes with --all"),
        (["--rate", "-1"], "--rate must be 0 or more"),
        (["--duration", "0"], "--duration must be positive"),
        (["--seeds", "0"], "--seeds must be 1 or more"),
        (["--min-replicas", "5", "--max-replicas", "2"], "--min-replicas <= --max-replicas"),
        (["--set", "targetPerReplica=0"], "targetPerReplica"),
        (["--set", "noSuchField=1"], "noSuchField"),
        (["--set", "novalue"], "--set takes FIELD=VALUE"),
        (["--slots", "0"], "slots per replica must be 1 or more"),
        (["--jobs", "fixed", "--job-mean", "0"], "mean job length must be positive"),
        (["--max-queue", "-1"], "max queue must be 0 or more"),
        (["--all", "--write-doc", "/nonexistent/page.md"], "no such page"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], arguments: list[str], words: str
) -> None:
    assert main(["bench", *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpuscale bench: error: ")
    assert words in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("arguments", [["--trace", "bogus"], ["--routing", "round-robin"], ["--seeds", "x"]])
def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str], arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *arguments])
    assert exit_info.value.code == 2
    assert "gpuscale bench: error:" in capsys.readouterr().err


def test_the_simulator_imports_no_io_client_and_nothing_of_kubernetes() -> None:
    code = (
        "import sys, gpuscale.sim.cli, gpuscale.sim.page, gpuscale.sim.suite, gpuscale.sim.report\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] in ('httpx', 'kopf', 'kubernetes', 'matplotlib')\n"
        "             or m.startswith('gpuscale.kube'))\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
