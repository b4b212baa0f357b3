"""Provenance recorded on every measurement row and result: the code, versions, hardware and time behind it."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path


@lru_cache(maxsize=1)
def git_sha() -> str:
    """Commit of the sdlaws checkout (with ``-dirty`` when it has uncommitted changes), or ``unknown``.

    ``SDLAWS_GIT_SHA`` overrides it, for copies of the tree without ``.git`` (e.g. a GPU machine's).
    """
    if os.environ.get("SDLAWS_GIT_SHA"):
        return os.environ["SDLAWS_GIT_SHA"]
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def version(package: str) -> str:
    """Installed version of ``package`` or ``""``."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def provenance(device_name: str = "cpu") -> dict[str, str]:
    """Provenance columns of :data:`sdlaws.schema.SPEC_RUN` (device name is passed in: no torch import here)."""
    from sdlaws import __version__

    return {"timestamp_utc": now_utc(), "git_sha": git_sha(), "sdlaws_version": __version__,
            "torch_version": version("torch"), "transformers_version": version("transformers"),
            "gpu_name": device_name}


def describe(record: dict) -> str:
    """``GPU, torch X, transformers Y, git `sha`, date`` of a record holding :func:`provenance`'s keys (a report's
    first line)."""
    return (f"{record['gpu_name']}, torch {record['torch_version']}, transformers {record['transformers_version']}, "
            f"git `{record['git_sha']}`, {record['timestamp_utc'][:10]}")
