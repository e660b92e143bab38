"""Builds the docs site (`make docs`): stages the pages and notebooks, then `mkdocs build --strict`.

The staging folder (mkdocs.yml's docs_dir, under outputs/) mirrors the repo, so a relative link
means the same on GitHub and in the site:

    README.md                      the home page
    docs/**                        the topic pages (this script is not copied)
    notebooks/<name>.ipynb         as the papermill tier executed it (outputs/notebooks/executed/,
                                   written by `make test` or `make test-notebooks`); else the
                                   unexecuted notebook; else, for a notebook mkdocs.yml's nav names
                                   but notebooks/ lacks, a placeholder page
    <any other repo file a page links to>   copied as it is (a source file, a manifest)

Each fallback prints a line. Nothing is executed here, so the build takes seconds. Under
--strict a link to a page, heading or file that does not exist fails the build.

    .venv/bin/python docs/build.py                      # what `make docs` runs
    .venv/bin/python docs/build.py --require-executed   # fail when a notebook has no executed copy
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "mkdocs.yml"
EXECUTED = REPO / "outputs" / "notebooks" / "executed"
# [text](target) and [text](target "title"); images too. Code is removed before matching.
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# `mkdocs` without rfc3987-syntax: jsonschema (under nbformat) imports it when installed, and it
# compiles a grammar at import, about 3 s of CPU (18 s of the build on a busy machine); nothing
# here uses the IRI formats it adds.
MKDOCS = (
    "import sys; sys.modules['rfc3987_syntax'] = None; "
    "from mkdocs.__main__ import cli; cli(prog_name='mkdocs')"
)


def nav_pages(nav: list) -> dict[str, str]:
    """Every page in mkdocs.yml's nav, in order: path -> title (the path when it has none)."""
    pages: dict[str, str] = {}
    for entry in nav:
        title, value = next(iter(entry.items())) if isinstance(entry, dict) else (entry, entry)
        if isinstance(value, list):
            pages.update(nav_pages(value))
        elif isinstance(value, str) and "://" not in value:
            pages[value] = title
    return pages


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def placeholder(name: str, title: str) -> dict:
    text = (
        f"# {title} (not written yet)\n\n"
        f"This notebook is not written yet: `notebooks/{name}.ipynb` does not exist in this tree. "
        "The site lists it so the tutorial's reading order is complete."
    )
    return {
        "cells": [{"cell_type": "markdown", "id": "placeholder", "metadata": {}, "source": text}],
        "metadata": {
            "kernelspec": {"name": "shop-ranking", "display_name": "Python (shop-ranking)"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def stage_notebooks(
    pages: dict[str, str], staging: Path, executed_dir: Path, require_executed: bool
) -> list[str]:
    """Copies each nav notebook into staging; returns the problems --require-executed fails on."""
    problems = []
    listed = {Path(p).stem for p in pages}
    for extra in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if extra.stem not in listed:
            print(f"docs: notebooks/{extra.name} is not in mkdocs.yml's nav (add it there)")
    for path, title in pages.items():
        name = Path(path).stem
        source, executed, target = REPO / path, executed_dir / f"{name}.ipynb", staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if executed.is_file():
            shutil.copyfile(executed, target)
            if source.is_file() and source.stat().st_mtime > executed.stat().st_mtime:
                print(
                    f"docs: {path}: the executed copy is older than the notebook; the site shows "
                    "it anyway (make test-notebooks refreshes it)"
                )
        elif source.is_file():
            shutil.copyfile(source, target)
            print(
                f"docs: {path}: not executed yet (no {_shown(executed)}); the site shows "
                "the notebook without outputs (make test-notebooks writes the executed copy)"
            )
            problems.append(f"{path} has no executed copy")
        else:
            target.write_text(json.dumps(placeholder(name, title), indent=1))
            print(f"docs: {path}: not in this tree yet; the site shows a placeholder page")
    return problems if require_executed else []


def stage_linked_files(staging: Path) -> None:
    """Copies every repo file a staged page links to, so mkdocs finds it; a link to a file that
    does not exist, or to a .md file that is not a staged page, fails under --strict."""
    for page in sorted(staging.rglob("*.md")):
        text = INLINE_CODE.sub("", FENCE.sub("", page.read_text()))
        for target in LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
                continue  # a URL, mailto:, an anchor on the same page, an absolute path
            try:
                relative = (
                    (page.parent / target.split("#")[0]).resolve().relative_to(staging.resolve())
                )
            except ValueError:
                continue  # outside the repo: mkdocs reports it
            source, copy = REPO / relative, staging / relative
            if source.is_file() and source.suffix != ".md" and not copy.exists():
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, copy)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--require-executed", action="store_true", help="fail when a notebook has no executed copy"
    )
    parser.add_argument(
        "--executed",
        type=Path,
        default=EXECUTED,
        help="where the executed notebooks are (default: outputs/notebooks/executed, the test tier's)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    config = yaml.safe_load(CONFIG.read_text())
    staging = REPO / config["docs_dir"]
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "docs").mkdir(parents=True)
    shutil.copyfile(REPO / "README.md", staging / "README.md")
    shutil.copytree(
        REPO / "docs",
        staging / "docs",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("*.py", "__pycache__"),
    )
    notebooks = {p: t for p, t in nav_pages(config["nav"]).items() if p.endswith(".ipynb")}
    problems = stage_notebooks(notebooks, staging, args.executed.resolve(), args.require_executed)
    if problems:
        print("docs: --require-executed: " + "; ".join(problems), file=sys.stderr)
        return 1
    stage_linked_files(staging)
    # The lock pins mkdocs < 2, so Material's banner about MkDocs 2.0 is noise here.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-c", MKDOCS, "build", "--strict", "--config-file", str(CONFIG)],
        cwd=REPO,
        env=env,
    )
    if result.returncode:
        print("docs: mkdocs build --strict failed (the lines above name the page)", file=sys.stderr)
        return result.returncode
    site = REPO / config["site_dir"]
    print(
        f"docs: site in {site.relative_to(REPO)}/ (open index.html) "
        f"in {time.monotonic() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
