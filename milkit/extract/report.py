"""Per-run outcome of extraction: one row per slide in ``extraction_report.csv``, plus a summary."""

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from milkit.atomic import write_bytes

COLUMNS = ("slide_id", "path", "status", "reason", "n_tiles", "seconds")


@dataclass
class SlideOutcome:
    slide_id: str
    path: str
    status: str            # done | skipped | failed
    reason: str = ""
    n_tiles: int = 0
    seconds: float = 0.0


@dataclass
class ExtractionSummary:
    """What ``extract_slides`` did: slide ids done and skipped (already extracted), failures with reasons."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    report_path: Path | None = None
    outcomes: list[SlideOutcome] = field(default_factory=list)

    def add(self, outcome: SlideOutcome) -> None:
        self.outcomes.append(outcome)
        if outcome.status == "done":
            self.done.append(outcome.slide_id)
        elif outcome.status == "skipped":
            self.skipped.append(outcome.slide_id)
        else:
            self.failed.append((outcome.slide_id, outcome.reason))

    @property
    def ok(self) -> bool:
        return not self.failed


def report_name(shard: tuple[int, int] | None) -> str:
    return "extraction_report.csv" if shard is None else f"extraction_report.shard-{shard[0]}-of-{shard[1]}.csv"


def write_report(path: Path, outcomes: list[SlideOutcome]) -> None:
    """Write (atomically) the report CSV: slide_id, path, status, reason, n_tiles, seconds."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for o in outcomes:
        writer.writerow([o.slide_id, o.path, o.status, o.reason, o.n_tiles, f"{o.seconds:.2f}"])
    write_bytes(path, buf.getvalue().encode())
