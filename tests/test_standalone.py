"""The repository stands alone: every reference points inside it, and user-facing text has no process words.

Formulas and their provenance live in ``docs/formulas.md``, engine and tool conventions in ``docs/peers.md``;
code and documents cite their sections as ``docs/formulas.md#<anchor>``, and every such anchor must exist.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Folders never scanned when the tree is walked without git (environments, caches, build output).
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", "node_modules", "build", "dist"}
#: Paths outside the repository that earlier drafts of the code cited (built by concatenation so that this file
#: does not match itself).
OUTSIDE = ("../" + "shared", "shared" + "/reference")
#: Reference notes that users of the package do not have; their content lives in docs/.
OUTSIDE_NOTES = ("style" + ".md", "offline" + "-assets")
#: Words about how the project was organised, not about what the code does.
PROCESS_WORDS = re.compile(r"\bissues? \d|\bissues? show\b", re.IGNORECASE)
#: Folders and files whose text users read (docstrings, help strings, documents).
USER_FACING = ("sdlaws", "docs", "README.md", "benchmarks", "examples", "data")
DOC_LINK = re.compile(r"\b(formulas|peers)\.md#([A-Za-z0-9_-]+)")


def _text_files() -> list[Path]:
    """Tracked text files (every file under the root, minus environments and caches, when git is absent)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30)
        paths = [ROOT / p for p in out.stdout.decode().split("\0") if p]
    except (OSError, subprocess.SubprocessError):
        paths = [p for p in ROOT.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    files = []
    for path in paths:
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (figures, gzip)
        files.append(path)
    return files


def _lines(paths, pattern) -> list[str]:
    """``path:line: text`` of every line of ``paths`` that ``pattern`` (a callable on the line) accepts."""
    hits = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    return hits


def _user_facing(files: list[Path]) -> list[Path]:
    return [p for p in files if p.relative_to(ROOT).parts[0] in USER_FACING]


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+?) *$", doc.read_text(encoding="utf-8"), re.M)}


def test_no_reference_points_outside_the_repository():
    hits = _lines(_text_files(), lambda line: any(s in line for s in OUTSIDE))
    assert not hits, "references to files outside the repository (cite docs/formulas.md or docs/peers.md):\n" + \
        "\n".join(hits)


def test_no_reference_to_notes_users_do_not_have():
    hits = _lines(_text_files(), lambda line: any(s in line for s in OUTSIDE_NOTES))
    assert not hits, "references to notes that are not in the repository (state the fact instead):\n" + \
        "\n".join(hits)


def test_no_process_words_in_user_facing_text():
    hits = _lines(_user_facing(_text_files()), lambda line: PROCESS_WORDS.search(line) is not None)
    assert not hits, "process words in user-facing text (say what the code does, not which task asked for it):\n" + \
        "\n".join(hits)


def test_every_formulas_and_peers_anchor_exists():
    anchors = {name: _anchors(ROOT / "docs" / f"{name}.md") for name in ("formulas", "peers")}
    assert {"acceptance-rates", "chain-tau", "alpha-mle", "speedup", "optimal-gamma", "tokens-per-flop",
            "acceptance-plane", "chinchilla-loss", "optimal-draft-size", "log-linear-laws",
            "top-k-versus-batch-size", "roofline", "provenance-tags"} <= anchors["formulas"]
    missing = []
    for path in _text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            missing += [f"{path.relative_to(ROOT)}:{number}: {m.group(0)}" for m in DOC_LINK.finditer(line)
                        if m.group(2) not in anchors[m.group(1)]]
    assert not missing, "anchors that docs/formulas.md or docs/peers.md do not have:\n" + "\n".join(missing)


def test_formulas_page_matches_the_constants_the_code_uses():
    """The published constants quoted in docs/formulas.md are the ones the planner uses."""
    from sdlaws import hardware
    from sdlaws.plan import optimize, priors, speedup

    text = (ROOT / "docs" / "formulas.md").read_text(encoding="utf-8")
    plane, loss = priors.SDSL_PLANE.params, priors.CHINCHILLA_LOSS.params
    quoted = {"A": "−0.0067", "B": "0.01297", "C": "0.642", "MSE": "0.00128", "E": "1.69", "A_loss": "406.4",
              "B_loss": "410.7", "alpha": "0.34", "beta": "0.28", "mu": "2.71e−3", "M0": "8.71e7"}
    assert (plane["A"], plane["B"], plane["C"], priors.SDSL_PLANE_MSE) == (-0.0067, 0.01297, 0.642, 0.00128)
    assert (loss["E"], loss["A"], loss["B"], loss["alpha"], loss["beta"]) == (1.69, 406.4, 410.7, 0.34, 0.28)
    assert (priors.SDSL_NSTAR_MU, priors.SDSL_NSTAR_M0) == (2.71e-3, 8.71e7)
    assert priors.DEFAULT_PRETRAIN_TOKENS == 2e12 and priors.SCYLLA_SATURATION_TOKENS == (5e10, 1e11)
    assert speedup.RANK_DECAY == 0.5 and optimize.TRAIN_MFU == 0.4 and optimize.MAX_NUM_SPEC_TOKENS_DRAFT == 20
    assert (hardware.DEFAULT_FLOPS_EFFICIENCY, hardware.DEFAULT_HBM_EFFICIENCY, hardware.H100_HBM_EFFICIENCY) == \
        (0.7, 0.80, 0.82)
    missing = [name for name, value in quoted.items() if value not in text]
    assert not missing, f"docs/formulas.md does not quote {missing}"
