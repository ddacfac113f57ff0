"""Where does a run's wall time go? A stack sampler: while it runs, a thread looks at every other
thread's stack every `interval_s` and adds the time since its last look to the part named by the
innermost frame that matches a rule (a function, or any code under a folder). Nothing in the
measured code is wrapped or replaced, so what runs is exactly what ships.

    with PartSampler({"ocr": [ocr_image], "storage": [encode_page, SQLALCHEMY_DIR]}) as s:
        run()
    s.seconds  # {"ocr": 1.92, "storage": 0.31}: time that thread spent inside each part

A part's figure is an estimate: its error is about one interval per entry into the part, so
parts much shorter than the interval may read 0.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import CodeType, FrameType, TracebackType
from typing import Any

Rule = Callable[..., Any] | Path


class PartSampler:
    def __init__(self, rules: Mapping[str, Iterable[Rule]], interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.seconds: dict[str, float] = defaultdict(float)
        self.samples = 0
        self._codes: dict[CodeType, str] = {}
        self._folders: list[tuple[str, str]] = []
        for part, found_by in rules.items():
            for rule in found_by:
                if isinstance(rule, Path):
                    self._folders.append((str(rule.resolve()) + os.sep, part))
                else:
                    self._codes[inspect.unwrap(rule).__code__] = part
        self._seen: dict[CodeType, str | None] = dict(self._codes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="part-sampler", daemon=True)

    def __enter__(self) -> PartSampler:
        # A thread running Python holds the GIL for up to the switch interval (5 ms by default)
        # before the sampler gets a look; shorten it to the sampling interval meanwhile.
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, self.interval_s))
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        sys.setswitchinterval(self._switch)

    def _run(self) -> None:
        me = threading.get_ident()
        last = time.perf_counter()
        while not self._stop.wait(self.interval_s):
            frames = sys._current_frames()
            now = time.perf_counter()
            dt, last = now - last, now
            self.samples += 1
            for ident, frame in frames.items():
                if ident != me and (part := self._part(frame)) is not None:
                    self.seconds[part] += dt

    def _part(self, frame: FrameType | None) -> str | None:
        while frame is not None:
            code = frame.f_code
            if code not in self._seen:
                self._seen[code] = next((part for folder, part in self._folders
                                         if code.co_filename.startswith(folder)), None)
            part = self._seen[code]
            if part is not None:
                return part
            frame = frame.f_back
        return None
