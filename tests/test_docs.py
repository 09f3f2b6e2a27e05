"""The documentation: README.md is the landing page, docs/ a MkDocs site that builds in strict
mode (a broken link, anchor or API reference fails it), and no measured result was lost when
the old 857-line README moved into docs/."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Every result file the README cited before the move to docs/ (git show 329e619:README.md).
CITED_BEFORE_THE_MOVE = (
    "appnp-iterate-layout-cpu-2026-12-01.json", "appnp-quiet-cpu-2026-12-01.json",
    "cg-direction-buffer-ab-cpu-2026-12-01.json", "citeseer-link-study-cpu-2026-12-01.json",
    "citeseer-study-5seeds-cpu-2026-12-01.json", "citeseer-study-cls-cpu-2026-11-21.json",
    "citeseer-study-cpu-2026-11-21.json", "citeseer-study-lr1e-5-cpu-2026-11-21.json",
    "encode-cpu-2026-12-01.json", "eval-bank-vs-fresh-cpu-2026-12-01.json", "sampler-cpu-2026-11-21.json",
    "sampler-draws-cpu-2026-12-01.json", "scale-cpu-2026-12-01-2threads-rerun.json",
    "scale-cpu-2026-12-01-2threads.json", "scale-cpu-2026-12-01.json", "subgraph-norm-cpu-2026-11-21.json",
    "subgraph-norm-cpu-2026-12-01.json",
)


def docs_text() -> str:
    return "".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").rglob("*.md")))


def docs_env() -> dict[str, str]:
    """The environment of `make docs` (the Makefile's ``DOCS_ENV``), over this process's."""
    line = re.search(r"^DOCS_ENV := (.*)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert line, "the Makefile defines no DOCS_ENV"
    return {**os.environ, **dict(item.split("=", 1) for item in line.group(1).split())}


def test_docs_site_builds_in_strict_mode_and_its_log_holds_no_terminal_codes(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], cwd=ROOT, env=docs_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # captured like a CI log: Material's end-of-life banner came in ANSI colour codes
    assert "\x1b" not in done.stdout + done.stderr, done.stdout + done.stderr
    # the API reference was generated from the docstrings, not left as ':::' lines
    reference = (tmp_path / "site" / "reference" / "index.html").read_text(encoding="utf-8")
    assert ":::" not in reference and "apply_overrides" in reference


def test_every_result_file_cited_before_the_move_is_still_cited():
    text = docs_text()
    missing = [name for name in CITED_BEFORE_THE_MOVE if f"benchmarks/results/{name}" not in text and name not in text]
    assert not missing, f"result files no longer cited in docs/: {missing}"
    for name in CITED_BEFORE_THE_MOVE:
        assert (ROOT / "benchmarks" / "results" / name).is_file(), name


def test_readme_is_a_landing_page_with_the_two_commands_first():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150
    assert lines[2] == "```bash"
    assert lines[3].startswith("make train") and lines[4].startswith("make test")
    # every page of the site is linked from the README and listed in mkdocs.yml's nav
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    readme = "\n".join(lines)
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f" {page.name}" in nav, f"{page.name} is not in mkdocs.yml's nav"
        if page.name not in ("index.md", "reference.md"):
            assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"


def test_architecture_moved_into_the_docs():
    assert not (ROOT / "ARCHITECTURE.md").exists()
    stale = [str(p.relative_to(ROOT)) for p in list(ROOT.glob("fastleading/**/*.py")) + list(ROOT.glob("tests/*.py"))
             + list(ROOT.glob("docs/*.md")) + [ROOT / "README.md"]
             if p.name != "test_docs.py" and "ARCHITECTURE.md" in p.read_text(encoding="utf-8")]
    assert not stale, f"still refer to ARCHITECTURE.md: {stale}"


def prose_problems(text: str) -> list[str]:
    """What `mkdocs build --strict` lets through: a code fence never closed (the rest of the
    page renders as code), and the obvious forms of a sentence that lost its start: a paragraph
    opening in lower case (other than the name fastleading) where no code block came just before
    (text after a block may go on with the sentence it interrupted), or opening with a fragment
    of one or two words ended by a full stop ("refused. ...")."""
    import re

    problems, fence, previous = [], None, ""
    for number, line in enumerate(text.splitlines(), 1):
        mark = re.match(r"^\s*(`{3,}|~{3,})", line)
        if mark:
            if fence is None:
                fence = (mark.group(1), number)
            elif line.strip() == mark.group(1)[:len(line.strip())] and line.strip()[0] == fence[0][0]:
                fence = None
            previous = "fence"
            continue
        if fence is None and previous in ("", "fence") and re.match(r"^[a-z]", line) \
                and not line.startswith("fastleading"):
            first_sentence = line.split(". ")[0]
            if previous == "" or (line.split(". ")[1:] and len(first_sentence.split()) < 3):
                problems.append(f"line {number}: a paragraph opens in lower case, as if its start were lost: "
                                f"{line[:40]!r}")
        if line.strip() or previous != "fence":
            previous = "" if not line.strip() else "text"
    if fence is not None:
        problems.append(f"line {fence[1]}: a code fence ({fence[0]}) that is never closed")
    return problems


def test_the_prose_checker_catches_an_open_fence_and_a_lost_start():
    assert prose_problems("Run:\n\n```bash\nls\n\nrefused. It goes on.\n")[-1].startswith("line 3: a code fence")
    assert prose_problems("Intro.\n\n```bash\nls\n```\n\nrefused. `--out` works.\n")
    assert prose_problems("A.\n\nrefused, and the rest.\n")
    assert prose_problems("Run:\n\n```bash\nls\n```\n\nthen one call, from the root:\n") == []
    assert prose_problems("fastleading fine-tunes a model.\n\n~~~\ncode\n~~~\n") == []


def test_every_page_closes_its_code_fences_and_keeps_its_sentences_whole():
    pages = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
    found = [f"{page.relative_to(ROOT)} {problem}" for page in pages
             for problem in prose_problems(page.read_text(encoding="utf-8"))]
    assert found == []


def test_make_train_figures_are_stated_in_one_place():
    """README, getting-started and results gave three different `make train` times and
    accuracies; one page states them, with the machine and commit, the others point there."""
    import re

    pages = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
    stating = [page.name for page in pages
               if re.search(r"`make train`[^.]*?(took|it took)|make train.{0,400}?\d+ s after set-up",
                            page.read_text(encoding="utf-8"), re.S)]
    assert stating == ["results.md"], stating
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    assert re.search(r"## `make train`.*?2-core CPU.*?commit [0-9a-f]{7}", text, re.S)
