"""One hypothesis being weighed: the evidence for and against it, in log-odds points, with the words to cite."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.incident import Category, Workload


@dataclass
class Tally:
    category: Category
    root_cause: Workload
    points: float = 0.0
    cited: list[str] = field(default_factory=list)
    against: list[str] = field(default_factory=list)

    def support(self, points: float, why: str) -> None:
        """Evidence for the hypothesis: ``points`` of log-odds (1 point ~ x2.7 the odds)."""
        self.points += points
        self.cited.append(f"for (+{points:g}): {why}")

    def oppose(self, points: float, why: str) -> None:
        self.points -= points
        self.against.append(f"against (-{points:g}): {why}")

    @property
    def evidence(self) -> list[str]:
        return self.cited + self.against
