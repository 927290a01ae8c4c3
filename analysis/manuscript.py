"""Compile the manuscript (Typst, offline: the ``typst`` package from PyPI, no LaTeX).

The manuscript reads every number from ``paper/generated/numbers.json`` (``analysis.numbers``)
and every figure from ``paper/figures/``; both are generated, never edited by hand.

Usage: ``python -m analysis.manuscript paper/manuscript.typ paper/manuscript.pdf``
"""

from __future__ import annotations

from pathlib import Path

import click
import typst


def compile_pdf(source: Path, output: Path, numbers: Path | None = None) -> None:
    """Compile ``source`` to ``output`` (PDF), atomically; ``numbers`` replaces the default
    ``generated/numbers.json`` (a path relative to the source's folder)."""
    inputs = {"numbers": str(numbers)} if numbers else {}
    pdf = typst.compile(str(source), root=str(source.parent), sys_inputs=inputs)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_suffix(".pdf.tmp")
    temporary.write_bytes(pdf)
    temporary.replace(output)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--numbers",
    type=click.Path(path_type=Path),
    default=None,
    help="numbers.json relative to the source's folder (default: generated/numbers.json).",
)
def main(source: Path, output: Path, numbers: Path | None) -> None:
    """Compile the Typst manuscript SOURCE to the PDF OUTPUT."""
    compile_pdf(source, output, numbers)


if __name__ == "__main__":
    main()
