"""Fault injection for the reliability tests and the chaos suite; inert unless configured.

``STAYLER_FAILPOINTS`` holds ``action=style`` pairs separated by commas, matched against a
conversion's ``style_name``:

- ``kill=poison``: the worker process SIGKILLs itself while processing the job (a job that kills
  its worker, e.g. a native crash in a decoder);
- ``sleep=slow:2.5``: the job takes 2.5 s longer before the model runs (to be caught mid-flight);
- ``stall=late:2``: a 2 s pause after the result files are written and before the completion is
  recorded (to exercise a completion that arrives after its claim was lost).

Production deployments leave the variable unset; nothing here runs then.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Failpoints:
    """Parsed failpoint configuration."""

    kill_styles: frozenset[str] = frozenset()
    sleep_styles: tuple[tuple[str, float], ...] = ()
    stall_styles: tuple[tuple[str, float], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Failpoints:
        """Parse ``kill=a,sleep=b:1.5``; raises ``ValueError`` on anything else."""
        kill: set[str] = set()
        sleep: list[tuple[str, float]] = []
        stall: list[tuple[str, float]] = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            action, _, arg = part.partition("=")
            if action == "kill" and arg:
                kill.add(arg)
            elif action in ("sleep", "stall") and ":" in arg:
                style, _, seconds = arg.partition(":")
                (sleep if action == "sleep" else stall).append((style, float(seconds)))
            else:
                raise ValueError(f"unknown failpoint {part!r} (expected kill=STYLE, sleep=STYLE:SECONDS "
                                 "or stall=STYLE:SECONDS)")
        return cls(frozenset(kill), tuple(sleep), tuple(stall))

    @property
    def active(self) -> bool:
        """Whether any failpoint is configured."""
        return bool(self.kill_styles or self.sleep_styles or self.stall_styles)

    def hit(self, style_name: str | None) -> None:
        """Apply the failpoints configured for this style (called once per claimed job)."""
        if not self.active or style_name is None:
            return
        for style, seconds in self.sleep_styles:
            if style == style_name:
                time.sleep(seconds)
        if style_name in self.kill_styles:
            os.kill(os.getpid(), signal.SIGKILL)

    def stall(self, style_name: str | None) -> None:
        """Pause between storing a job's result and recording its completion, if configured."""
        for style, seconds in self.stall_styles:
            if style == style_name:
                time.sleep(seconds)
