"""Prometheus text expositions (what a server's ``/metrics`` returns) as sample tables, and the window between two.

Parsing is ``prometheus_client``'s (:func:`prometheus_client.parser.text_string_to_metric_families`). Samples are
kept under their exposed names: ``prometheus_client`` exposes a counter created as ``vllm:spec_decode_num_drafts``
as ``vllm:spec_decode_num_drafts_total`` (the name PromQL queries use) and adds a ``..._created`` gauge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdlaws.errors import InputError

#: One series: its labels as sorted (name, value) pairs.
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scrape:
    """The samples of one exposition: ``values[sample name][labels] = value``."""

    source: str
    values: dict[str, dict[Labels, float]]

    def has(self, name: str) -> bool:
        """Whether the exposition holds a sample called ``name``."""
        return name in self.values

    def series(self, name: str) -> dict[Labels, float]:
        """Every series of sample ``name`` (empty when absent)."""
        return self.values.get(name, {})

    def minus(self, before: "Scrape") -> "Scrape":
        """Counts accumulated between ``before`` and this scrape (series only in this scrape count from zero).

        Raises
        ------
        InputError
            A counter went down: the server restarted between the scrapes, so the difference is no window.
        """
        diff: dict[str, dict[Labels, float]] = {}
        for name, series in self.values.items():
            old = before.series(name)
            for labels, value in series.items():
                delta = value - old.get(labels, 0.0)
                if delta < 0 and not name.endswith("_created"):
                    raise InputError(f"{self.source}: {name}{dict(labels)} went down from {old[labels]:g} to "
                                     f"{value:g} since {before.source}; the server restarted between the scrapes, "
                                     "take both after the restart")
                diff.setdefault(name, {})[labels] = delta
        return Scrape(source=f"{before.source} -> {self.source}", values=diff)


def parse(text: str, source: str) -> Scrape:
    """Samples of a text exposition; :class:`InputError` (one line) when it is not one."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, dict[Labels, float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = float(sample.value)
    except ValueError as exc:
        raise InputError(f"{source}: not a Prometheus text exposition ({' '.join(str(exc).split())[:120]}); pass "
                         "the body of the server's /metrics response") from None
    if not values:
        raise InputError(f"{source}: no samples; pass the body of the server's /metrics response")
    return Scrape(source=source, values=values)


def read(path: Path) -> Scrape:
    """:func:`parse` of a file."""
    return parse(read_text(path), str(path))


def read_text(path: Path) -> str:
    """Text of an input file, with a one-line error when it cannot be read."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read as text ({exc.__class__.__name__})") from None


def is_exposition(text: str) -> bool:
    """Whether ``text`` looks like a Prometheus exposition (``# TYPE``/``# HELP`` lines)."""
    return any(line.startswith(("# TYPE ", "# HELP ")) for line in text.splitlines())


def without(labels: Labels, *names: str) -> Labels:
    """``labels`` without the label ``names`` (e.g. the ``position`` of a per-position counter)."""
    return tuple((k, v) for k, v in labels if k not in names)
