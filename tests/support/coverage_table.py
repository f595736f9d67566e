"""The test command's coverage report: one line per package, and the floors it holds.

Packages are those of pyproject.toml's ``[tool.setuptools]``, each counted over the
files directly in its folder (``mcphost.host`` without ``host/cli/``, which is
``mcphost.host.cli``). Floors come from ``[tool.mcphost.coverage-floors]``: a floor
applies once its package's folder exists; until then the table says the package is not
built yet. Floors are checked only when the whole suite ran (``pytest`` with no paths,
nothing deselected): part of the suite measures part of the code.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import coverage

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"


@dataclass(frozen=True)
class Row:
    """One package's figures; ``statements`` is None for a package not built yet."""

    package: str
    statements: int | None
    missing: int = 0
    floor: float | None = None

    @property
    def percent(self) -> float:
        if not self.statements:
            return 100.0
        return 100.0 * (self.statements - self.missing) / self.statements

    @property
    def below_floor(self) -> bool:
        return (
            self.statements is not None
            and self.floor is not None
            and (round(self.percent, 1) < self.floor)
        )


def _folder(package: str, package_dir: dict[str, str]) -> Path:
    """The source folder of ``package`` (``mcphost.host.cli`` -> ``host/cli``)."""
    parts = package.split(".")
    for i in range(len(parts), 0, -1):
        root = ".".join(parts[:i])
        if root in package_dir:
            return REPO / package_dir[root] / Path(*parts[i:])
    raise ValueError(f"{package} is in no folder of [tool.setuptools] package-dir")


def rows() -> list[Row]:
    """Every package's figures from the suite's combined coverage data."""
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    setup = config["tool"]["setuptools"]
    floors: dict[str, float] = config["tool"]["mcphost"]["coverage-floors"]
    packages = list(dict.fromkeys([*setup["packages"], *floors]))
    cov = coverage.Coverage(config_file=str(PYPROJECT))
    cov.load()  # pytest-cov has combined every process's data into the data file
    out: list[Row] = []
    for package in packages:
        folder = _folder(package, setup["package-dir"])
        if not folder.is_dir():
            out.append(Row(package, None, floor=floors.get(package)))
            continue
        statements = missing = 0
        for path in sorted(folder.glob("*.py")):
            _, stmts, _, miss, _ = cov.analysis2(str(path))
            statements += len(stmts)
            missing += len(miss)
        out.append(Row(package, statements, missing, floors.get(package)))
    return out


def table(found: list[Row]) -> list[str]:
    """The report's lines: package, statements, missed, coverage, floor; then the total."""
    lines = [f"{'package':<24}{'stmts':>7}{'miss':>7}{'cover':>8}  floor"]
    for r in found:
        floor = f"  {r.floor:.0f}%" if r.floor is not None else ""
        if r.statements is None:
            lines.append(f"{r.package:<24}{'not built yet':>22}{floor}")
            continue
        mark = "  BELOW FLOOR" if r.below_floor else ""
        lines.append(
            f"{r.package:<24}{r.statements:>7}{r.missing:>7}{r.percent:>7.1f}%{floor}{mark}"
        )
    built = [r for r in found if r.statements is not None]
    total = Row("TOTAL", sum(r.statements or 0 for r in built), sum(r.missing for r in built))
    lines.append(
        f"{total.package:<24}{total.statements:>7}{total.missing:>7}{total.percent:>7.1f}%"
    )
    return lines
