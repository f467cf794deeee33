"""Every document the code cites is in the repository, and every cited section exists."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITED = re.compile(r"(?<![\w/.])(?:docs/)?(method|data|design)\.md(?: §(\d+))?")
SCANNED = ("simcrop", "config", "kernels", "workflow", "tests")


def _citations():
    for folder in SCANNED:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".smk", ".yaml"} and path.is_file():
                for match in CITED.finditer(path.read_text(errors="replace")):
                    yield path.relative_to(ROOT), match.group(1), match.group(2)


def test_cited_documents_and_sections_exist():
    found = list(_citations())
    assert found, "no citations found: the pattern no longer matches how the code cites docs"
    missing = []
    for source, name, section in found:
        doc = ROOT / "docs" / f"{name}.md"
        if not doc.is_file():
            missing.append(f"{source}: docs/{name}.md does not exist")
        elif section and not re.search(rf"^## {section}\.", doc.read_text(), re.M):
            missing.append(f"{source}: docs/{name}.md has no section §{section}")
    assert not missing, "\n".join(missing)


def test_readme_layout_maps_every_package_folder():
    """The README's "Layout" section has a line for each folder of the package and each top-level module,
    so a new module folder cannot go unmapped."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    mapped = {line.split()[0] for line in section.splitlines() if line[:1].isalpha() and "/" in line.split()[0]}
    package = ROOT / "simcrop"
    expected = {f"simcrop/{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    expected |= {f"simcrop/{p.name}" for p in package.glob("*.py") if p.stem != "__init__"}
    expected |= {"kernels/", "workflow/", "config/", "docs/", "tests/"}
    assert expected <= mapped, f"README Layout lacks {sorted(expected - mapped)}"
