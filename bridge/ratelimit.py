"""TokenBucket: a per-sender budget (commands, read receipts), refilled continuously."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``burst`` tokens per sender, refilled at ``rate_per_s``; :meth:`take` spends one."""

    rate_per_s: float
    burst: int
    tokens: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, user: str, now: float) -> bool:
        level, last = self.tokens.get(user, (float(self.burst), now))
        level = min(float(self.burst), level + (now - last) * self.rate_per_s)
        if level < 1:
            self.tokens[user] = (level, now)
            return False
        self.tokens[user] = (level - 1, now)
        return True
