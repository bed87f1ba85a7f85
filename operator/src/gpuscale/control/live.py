"""The live view of `gpuscale local`: a status line per change (redrawn in place on a terminal) and
a permanent line for every scale decision with its reason."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from gpuscale.control.loop import TickReport


def status_line(report: TickReport) -> str:
    obs = report.observation
    load = "load unknown" if obs.queued is None else f"queued {obs.queued:>3g}  running {obs.running:>3g}"
    starting = f" + {obs.starting} starting" if obs.starting else ""
    return f"replicas {obs.ready} ready{starting} (want {report.decision.desired})  {load}"


def decision_line(report: TickReport, elapsed: float) -> str:
    parts = [report.decision.reason]
    if report.started:
        parts.append(f"started {', '.join(report.started)}")
    if report.stopped:
        parts.append(f"stopped idle {', '.join(report.stopped)}")
    if report.spared:
        parts.append(f"kept busy {', '.join(report.spared)}")
    return f"{elapsed:7.1f} s  {report.decision.kind:>4}: " + "; ".join(parts)


class LiveView:
    def __init__(self, stream: TextIO = sys.stdout, start: float | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.start = time.monotonic() if start is None else start
        self._last_status = ""
        self._status_shown = False

    def _clear(self) -> None:
        if self.tty and self._status_shown:
            self.stream.write("\r\x1b[K")
            self._status_shown = False

    def note(self, text: str) -> None:
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, report: TickReport) -> None:
        elapsed = report.time - self.start
        if report.scaled or report.spared or report.decision.kind in ("up", "down"):
            self.note(decision_line(report, elapsed))
        if report.error:
            self.note(f"{elapsed:7.1f} s  error: {report.error}")
        status = status_line(report)
        changed = status != self._last_status
        self._last_status = status
        if self.tty:
            self._clear()
            self.stream.write(f"{elapsed:7.1f} s  {status}")
            self._status_shown = True
            self.stream.flush()
        elif changed:
            self.note(f"{elapsed:7.1f} s  {status}")
