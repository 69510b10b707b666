"""How long a forward pass takes, learnt from the passes themselves: the batcher sizes its passes by it."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class ForwardTimeFit:
    """seconds ~ fixed + per_unit x padded cost, least squares over the recent forward passes (each
    older pass weighs ``decay`` times less, so the fit follows a machine that gets busier).

    ``fixed_cost`` = fixed / per_unit: what every pass pays whatever its size (Python dispatch of
    the layers, kernel launches, thread hand-offs), in the units of item cost. Zero until the
    passes seen vary enough in size to tell the two terms apart."""

    decay: float = 0.99
    n: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0

    def add(self, padded_cost: float, seconds: float) -> None:
        d = self.decay
        self.n = d * self.n + 1
        self.sx = d * self.sx + padded_cost
        self.sy = d * self.sy + seconds
        self.sxx = d * self.sxx + padded_cost * padded_cost
        self.sxy = d * self.sxy + padded_cost * seconds

    def _line(self) -> tuple[float, float] | None:
        """(fixed seconds, seconds per unit) of the fitted line; None until enough passes of
        different enough sizes are seen to tell the two apart."""
        if self.n < 8:
            return None
        spread = self.n * self.sxx - self.sx * self.sx  # n^2 x variance of the sizes
        if spread <= (0.1 * self.sx) ** 2:  # sizes within ~10% of each other: no slope to read
            return None
        per_unit = (self.n * self.sxy - self.sx * self.sy) / spread
        return (self.sy - per_unit * self.sx) / self.n, per_unit

    @property
    def fixed_cost(self) -> float:
        line = self._line()
        if line is None:
            return 0.0
        fixed, per_unit = line
        return fixed / per_unit if per_unit > 0 and fixed > 0 else 0.0

    def padded_within(self, seconds: float) -> float:
        """The padded cost a pass can hold and still take at most ``seconds``; infinite until enough
        passes are seen. Without a slope to read, every unit is charged the mean time per unit
        (fixed cost included), which overestimates bigger passes: the bound errs small."""
        if self.n < 8 or self.sy <= 0:
            return math.inf
        line = self._line()
        if line is None or line[1] <= 0:
            return seconds * self.sx / self.sy
        fixed, per_unit = line
        return max(0.0, (seconds - max(0.0, fixed)) / per_unit)

    def seconds(self, padded_cost: float) -> float | None:
        """What one pass of ``padded_cost`` should take; None until a pass is seen."""
        if self.n < 1 or self.sx <= 0:
            return None
        line = self._line()
        if line is None or line[1] <= 0:
            return padded_cost * self.sy / self.sx
        fixed, per_unit = line
        return max(0.0, fixed) + per_unit * padded_cost


@dataclass
class BusyRate:
    """Seconds of wall time per unit of real cost while the model has work queued: the time between
    the ends of consecutive passes, so that padding, a pass's fixed cost, the CPU's turns with
    request preparation and the batcher's own work all count, per the later pass's real cost. A
    pass after an idle spell (its own time is its sample) counts only until the model has been
    busy: a lone query is all fixed cost per unit, and says nothing of how fast queued work drains
    (lone queries between bursts would make the next burst's forecast pessimistic). Each older pass weighs ``decay`` times less: the
    rate follows a machine that gets busier within a few dozen passes, and one slow pass (a long
    item's, or one that waited on request preparation) moves it by a few percent, not a tenth."""

    decay: float = 0.97
    seconds: float = 0.0
    cost: float = 0.0
    busy_seen: bool = False  # a sample of a pass that followed another with work queued

    def add(self, seconds: float, real_cost: float, busy: bool = True) -> None:
        if not busy and self.busy_seen:
            return
        if busy and not self.busy_seen:  # the first busy sample: forget the idle ones
            self.busy_seen, self.seconds, self.cost = True, 0.0, 0.0
        self.seconds = self.decay * self.seconds + seconds
        self.cost = self.decay * self.cost + real_cost

    @property
    def per_unit(self) -> float | None:
        return self.seconds / self.cost if self.cost > 0 else None
