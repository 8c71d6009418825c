"""The one ``ondeck`` console script: parses, calls, maps errors to exit codes.

Each subcommand lives in ``ondeck.commands.<module>``, which exposes ``configure(parser)`` and
``run(args) -> int``. Those modules import only argparse-level things at the top so that
``ondeck --help`` stays fast; the heavy imports happen inside ``run``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module under ondeck.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "package": ("package", "build a model package (ONNX + metadata + reference profile) from a scikit-learn estimator"),
    "examples": ("examples", "build the example packages (churn v1, v2, v2-bad; cancer v1) offline"),
    "batch": ("batch", "score a CSV or Parquet file offline with a package, in chunks"),
    "serve": ("serve", "serve packages over the Open Inference Protocol (V2 REST + gRPC, V1 REST)"),
    "route": ("route", "split traffic between model variants: weights, header and sticky rules, shadow"),
    "drift": ("drift", "check a file of live rows for drift against a package's reference profile"),
    "run": ("run", "run a ModelDeployment manifest on this machine: processes instead of pods"),
    "demo": ("demo", "play the canary, rollback and drift scenarios locally and write plots"),
    "operator": ("operator", "run the Kubernetes operator (kopf) for ModelDeployment resources"),
    "status": ("rollout", "show a rollout: step, weights, last analysis and its evidence"),
    "promote": ("rollout", "bless a paused rollout so it moves on (or end an A/B test or shadow: the new variant wins)"),
    "abort": ("rollout", "abort a rollout, A/B test or shadow: traffic back to stable, the new variant scaled down"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ondeck", description=
                                     "Serve models, canary new versions, watch drift, roll back on its own.")
    parser.add_argument("--version", action="version", version=f"ondeck {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"ondeck.commands.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure = getattr(mod, f"configure_{name}", None) or mod.configure
        configure(p)
        p.set_defaults(_run=getattr(mod, f"run_{name}", None) or mod.run)
    return parser


def _version() -> str:
    from ondeck import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    from ondeck.errors import OndeckError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except OndeckError as exc:
        print(f"ondeck {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
