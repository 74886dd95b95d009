"""Ansible callback for the benchmarks: wall time of every task (all hosts together), written as JSON.

Enabled by bench/bench_site.py with ``ANSIBLE_CALLBACK_PLUGINS=bench/callback_plugins`` and
``ANSIBLE_CALLBACKS_ENABLED=rayops_profile``; ``RAYOPS_PROFILE_FILE`` names the output file.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: rayops_profile
type: aggregate
short_description: per-task wall times for rayops' benchmarks
description:
  - Records how long each task ran (from its start to the next task's start) and writes
    a JSON list of {play, task, role, seconds} to the file named by RAYOPS_PROFILE_FILE.
requirements:
  - enable in the callbacks_enabled setting
"""


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "rayops_profile"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._rows: list[dict[str, Any]] = []
        self._current: dict[str, Any] | None = None
        self._play = ""

    def _close(self) -> None:
        if self._current is not None:
            self._current["seconds"] = round(time.monotonic() - self._current.pop("_start"), 3)
            self._rows.append(self._current)
            self._current = None

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._close()
        self._play = play.get_name()

    def _start(self, task: Any, kind: str) -> None:
        self._close()
        role = task._role.get_name() if getattr(task, "_role", None) else ""
        self._current = {
            "play": self._play,
            "task": task.get_name(),
            "role": role,
            "kind": kind,
            "_start": time.monotonic(),
        }

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._start(task, "task")

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._start(task, "handler")

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._close()
        path = os.environ.get("RAYOPS_PROFILE_FILE")
        if path:
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(self._rows, handle, indent=1)
