"""Event-time watermarks, per source partition, with idleness.

Each partition's watermark is the largest event time seen in it minus the delay; the query's
watermark is the smallest over the partitions that are *active*. A partition silent for
``idle_timeout`` stops holding the others back (Flink's idleness). When every partition is silent
that long, the watermark follows the wall clock from the last event — event time is taken to keep
pace with real time — so the windows of a stream that went quiet still close (what Quix #790 and
Bytewax #138 users asked for). The watermark never goes backwards.
"""

from __future__ import annotations

import time

import numpy as np

from riera.plan.stream import WatermarkSpec

NO_TIME = -(2**62)


class WatermarkTracker:
    def __init__(self, spec: WatermarkSpec, partitions: int) -> None:
        self.spec = spec
        self.max_ts = [NO_TIME] * partitions
        self.last_seen = [0.0] * partitions  # monotonic time of each partition's last event
        self._floor = NO_TIME
        self._last_any = 0.0
        self._restored: tuple[int, float] | None = None  # (watermark, monotonic time) of floor()

    def floor(self, watermark: int) -> None:
        """Never report less than ``watermark`` (restored from the checkpoint log)."""
        self._floor = max(self._floor, watermark)
        self._restored = (self._floor, time.monotonic())

    def observe(self, partitions: np.ndarray, ts: np.ndarray, now: float) -> None:
        if len(ts) == 0:
            return
        for p in np.unique(partitions):
            p = int(p)
            if p >= len(self.max_ts):
                grow = p + 1 - len(self.max_ts)
                self.max_ts += [NO_TIME] * grow
                self.last_seen += [0.0] * grow
            self.max_ts[p] = max(self.max_ts[p], int(ts[partitions == p].max()))
            self.last_seen[p] = now
        self._last_any = now

    def current(self, now: float) -> int:
        delay, idle = self.spec.delay_ms, self.spec.idle_ms
        seen = [i for i, t in enumerate(self.max_ts) if t != NO_TIME]
        if not seen:
            # Restored from a checkpoint and no event since: the largest event times died with
            # the previous run, but the restored watermark stands for them. Once the stream has
            # been silent for idle_timeout since the restart, follow the wall clock from there,
            # as below — else the windows left open by the restart never close on an idle stream.
            if idle is not None and self._restored is not None:
                restored, at = self._restored
                quiet_ms = int((now - at) * 1000)
                if quiet_ms >= idle:
                    self._floor = max(self._floor, restored + quiet_ms)
            return self._floor
        if idle is None:
            active = seen
        else:
            active = [i for i in seen if (now - self.last_seen[i]) * 1000 < idle]
        if active:
            wm = min(self.max_ts[i] for i in active) - delay
            if idle is None and len(seen) < len(self.max_ts):
                wm = self._floor  # a partition that never spoke holds the watermark back
        else:  # all idle: event time follows the wall clock from the last event
            wm = max(self.max_ts) + int((now - self._last_any) * 1000) - delay
        self._floor = max(self._floor, wm)
        return self._floor
