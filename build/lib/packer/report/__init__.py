"""What a run tells: stats.json and failures.jsonl (stats), the dataset card (card)."""

from .card import write_card
from .stats import build_stats, final_rows, summary, write_failures, write_stats

__all__ = ["build_stats", "final_rows", "summary", "write_card", "write_failures", "write_stats"]
