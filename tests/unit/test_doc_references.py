"""The product cites its own docs: every `docs/NAME.md` or `benchmarks/README.md` a source file,
script or doc names must exist, and a section it names (`FILE.md, "Section"`) must be a heading
of that file, so that a reader who follows a comment finds what it promises."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ["src", "workflow", "benchmarks", "scripts", "docs", "profiles", "config"]
SUFFIXES = {".py", ".smk", ".md", ".yaml", ".yml", ".sh"}
PATH_REF = re.compile(r"\b((?:docs|benchmarks)/[\w.-]+\.md)\b")
SECTION_REF = re.compile(r"\b((?:docs/|benchmarks/)?[\w.-]+\.md),\s*\"([^\"\n]+)\"")


def texts():
    files = [ROOT / "README.md", ROOT / "Snakefile"]
    for top in SCANNED:
        files += [p for p in (ROOT / top).rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    for path in files:
        yield path.relative_to(ROOT), path.read_text(encoding="utf-8", errors="replace")


def resolve(name: str) -> Path | None:
    if "/" in name:
        return ROOT / name if (ROOT / name).is_file() else None
    for top in ("docs", "benchmarks"):
        if (ROOT / top / name).is_file():
            return ROOT / top / name
    return None


def headings(path: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")]


def test_every_cited_doc_exists():
    missing = sorted({f"{where}: {ref}" for where, text in texts()
                      for ref in PATH_REF.findall(text) if not (ROOT / ref).is_file()})
    assert not missing, "docs cited but not there:\n" + "\n".join(missing)


def test_every_cited_section_is_a_heading_of_its_doc():
    bad = []
    for where, text in texts():
        for name, section in SECTION_REF.findall(text):
            path = resolve(name)
            if path is None:
                bad.append(f"{where}: {name} does not exist")
            elif not any(section.lower() in h.lower() for h in headings(path)):
                bad.append(f"{where}: {name} has no heading {section!r}")
    assert not bad, "sections cited but not there:\n" + "\n".join(sorted(set(bad)))


def test_the_scan_finds_the_citations_it_checks():
    # a regex that matched nothing would pass both tests above
    refs = [m for _, text in texts() for m in SECTION_REF.findall(text)]
    assert any(name.endswith("llm_workloads.md") and section == "Connections"
               for name, section in refs)
    assert sum(1 for _, text in texts() for _ in PATH_REF.finditer(text)) > 20
