"""``python -m microseg demo``: the whole notebook chain on built-in synthetic data (``make demo``).

Each demo gets a fresh run folder: if ``runs/demo`` already holds results, the next free name
(``runs/demo-2`` ...) is used, so an earlier demo is never overwritten.

The demo runs with a *demo budget* (:data:`DEMO_BUDGET`): shorter trainings than the notebooks'
defaults, which are made for users' data, so that the whole chain takes minutes. The budget is
passed as ordinary notebook parameters, so each executed notebook shows it in its injected
parameters cell, its ``summary.json`` lists it among the given parameters, and so does the
front page. ``--full`` runs the notebooks' own defaults instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from microseg.errors import MicrosegError
from microseg.notebook.chain import run_chain
from microseg.reports.run_report import gather_run_report, model_verdicts
from microseg.runs import unique_name

__all__ = [
    "DEMO_BUDGET",
    "main",
]

DEMO_BUDGET: dict[str, dict[str, object]] = {
    "02_train_from_scratch": {"max_minutes": 3},
    "03_transfer_learning": {"epochs": 5},
    "04_fine_tune": {"epochs": 5},
}
"""Per notebook, the parameters of the demo budget (see the module docstring)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microseg demo", description=__doc__)
    parser.add_argument("--run-dir", default="runs/demo", help="run folder (default runs/demo)")
    parser.add_argument("--ndim", type=int, choices=(2, 3), default=2, help="2D or 3D data")
    parser.add_argument("--quick", action="store_true", help="smoke run: seconds per notebook")
    parser.add_argument("--full", action="store_true",
                        help="the notebooks' own defaults instead of the demo budget (longer)")
    args = parser.parse_args(argv)

    wanted = Path(args.run_dir)
    run_dir = wanted.parent / unique_name(wanted.parent, wanted.name)
    if run_dir != wanted:
        print(f"{wanted} already holds a run; writing this one to {run_dir}")
    start = time.perf_counter()
    try:
        budget = {} if args.quick or args.full else DEMO_BUDGET
        if budget:
            print("demo budget (shorter trainings than for your data; --full for the defaults): "
                  + "; ".join(f"{nb[:2]} " + ", ".join(f"{k}={v}" for k, v in p.items())
                              for nb, p in budget.items()))
        results = run_chain(run_dir, quick=args.quick, parameters={"ndim": args.ndim},
                            per_notebook=budget)
    except MicrosegError as err:
        print(f"error: {err}", file=sys.stderr)
        if (run_dir / "index.html").is_file():
            print(f"the run report so far: {run_dir.resolve() / 'index.html'}", file=sys.stderr)
        return 1
    print(f"\nfinished {len(results)} notebooks in {time.perf_counter() - start:.0f} s")
    for r in results:
        print(f"  {r.name:<32} {r.seconds:7.1f} s")
    print("\nmodels (a smoke run: a few training steps, so the scores mean nothing):"
          if args.quick else "\nmodels:")
    for line in model_verdicts(gather_run_report(run_dir)):
        print(f"  {line}")
    print(f"\nopen {run_dir.resolve() / 'index.html'}: the run report (models, diagnostics, "
          f"deployment, figures, every notebook)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
