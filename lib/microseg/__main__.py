"""``python -m microseg``: the notebooks from a shell, with their parameters checked first.

    python -m microseg run 01_prepare_data 02_train_from_scratch --run-dir runs/exp1 \\
        -p data_dir my_data -p max_minutes 30
    python -m microseg parameters 07_deploy         # what a notebook accepts
    python -m microseg demo                          # the whole chain on synthetic data
    python -m microseg models                        # the built-in models

``run`` executes the named notebooks (stems, numbers such as ``02``, or ``all``) in order into
one run folder, each with the parameters it declares, and writes the run's front page. A name
that none of them declares stops everything before the first cell runs, with the closest
declared names. Values are text, read as each parameter's declared type (``-p epochs 40``,
``-p tile_shape 256,256``, ``-p model_name None``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from microseg.errors import MicrosegError

__all__ = ["main"]


def _notebooks(names: list[str]) -> list[Path]:
    from microseg.notebook.chain import list_notebooks

    available = list_notebooks()
    if names == ["all"]:
        return available
    chosen = []
    for name in names:
        found = [p for p in available if p.stem == name or p.stem.split("_")[0] == name
                 or p.name == name]
        if not found:
            raise MicrosegError(f"no notebook {name!r}; expected one of "
                                f"{', '.join(p.stem for p in available)}, a number or 'all'")
        chosen += found
    return chosen


def _run(args: argparse.Namespace) -> int:
    from microseg.notebook.chain import run_chain

    parameters = dict(args.parameter or [])
    results = run_chain(args.run_dir, quick=args.quick, parameters=parameters,
                        notebooks=_notebooks(args.notebooks))
    print(f"finished {len(results)} notebook(s); front page: "
          f"{Path(args.run_dir).resolve() / 'index.html'}")
    return 0


def _parameters(args: argparse.Namespace) -> int:
    from microseg.notebook.chain import parameter_rows, parameters_markdown

    notebooks = _notebooks(args.notebooks or ["all"])
    if args.markdown:
        print(parameters_markdown(notebooks))
        return 0
    for notebook in notebooks:
        print(f"\n{notebook.stem}")
        for name, default, meaning in parameter_rows(notebook):
            print(f"  {name:<22} {default:<14} {meaning}")
    return 0


def _models(_: argparse.Namespace) -> int:
    from microseg.models.builtin import builtin_models
    from microseg.models.zoo import cache_dir, cached_packages

    rows = builtin_models()
    if not rows:
        print("no built-in models in this installation")
    for row in rows:
        scores = ", ".join(f"{k} {v}" for k, v in row["scores"].items())
        print(f"{row['name']:<12} {row['size_mb']} MB  {row['description']}\n"
              f"{'':<12} trained on: {row['data']}\n{'':<12} held-out scores: {scores}")
    downloaded = cached_packages()
    if downloaded:
        print(f"\ndownloaded packages ({cache_dir()}), usable by the same name:")
    for row in downloaded:
        print(f"{row['source']}  {row['size_mb']} MB  {row['folder']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microseg", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run notebooks headless into one run folder")
    run.add_argument("notebooks", nargs="+", help="notebook stems or numbers, or 'all'")
    run.add_argument("--run-dir", required=True, help="the run folder")
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="a parameter (repeatable); checked against the notebooks' names")
    run.add_argument("--quick", action="store_true", help="smoke run")
    listing = commands.add_parser("parameters", help="list what each notebook accepts")
    listing.add_argument("notebooks", nargs="*", help="notebook stems or numbers (all)")
    listing.add_argument("--markdown", action="store_true", help="as docs/parameters.md")
    commands.add_parser("models", help="list the built-in models (usable by name)")
    commands.add_parser("demo", help="the whole chain on synthetic data (see make demo)",
                        add_help=False)
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["demo"]:
        from microseg.notebook.demo import main as demo

        return demo(argv[1:])
    args = parser.parse_args(argv)
    try:
        return {"run": _run, "parameters": _parameters, "models": _models}[args.command](args)
    except MicrosegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
