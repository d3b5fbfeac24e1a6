"""Fault injection for the reliability tests and the chaos suite; inert unless configured.

``STAYLER_FAILPOINTS`` holds ``action=style`` pairs separated by commas, matched against a
conversion's ``style_name``:

- ``kill=poison``: the worker process SIGKILLs itself while processing the job (a job that kills
  its worker, e.g. a native crash in a decoder);
- ``sleep=slow:2.5``: the job takes 2.5 s longer (to be caught mid-flight by kills and SIGTERM).

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

    @classmethod
    def parse(cls, spec: str) -> Failpoints:
        """Parse ``kill=a,sleep=b:1.5``; raises ``ValueError`` on anything else."""
        kill: set[str] = set()
        sleep: list[tuple[str, float]] = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            action, _, arg = part.partition("=")
            if action == "kill" and arg:
                kill.add(arg)
            elif action == "sleep" and ":" in arg:
                style, _, seconds = arg.partition(":")
                sleep.append((style, float(seconds)))
            else:
                raise ValueError(f"unknown failpoint {part!r} (expected kill=STYLE or sleep=STYLE:SECONDS)")
        return cls(frozenset(kill), tuple(sleep))

    @property
    def active(self) -> bool:
        """Whether any failpoint is configured."""
        return bool(self.kill_styles or self.sleep_styles)

    def hit(self, style_name: str | None) -> None:
        """Apply the failpoints configured for this style (called once per claimed job)."""
        if not self.active or style_name is None:
            return
        for style, seconds in self.sleep_styles:
            if style == style_name:
                time.sleep(seconds)
        if style_name in self.kill_styles:
            os.kill(os.getpid(), signal.SIGKILL)
