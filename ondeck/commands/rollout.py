"""`ondeck status / promote / abort NAME`: look at or steer a rollout.

Without ``--namespace``/``--kubeconfig`` they act on a local ``ondeck run`` through its state
directory (status reads ``state.json``; promote and abort leave a command there that the run takes on
its next tick, and wait for its answer). With them they act on the ModelDeployment in a cluster,
which is the operator's side: :func:`ondeck.operator.rollout_commands.run_command`.
"""
from __future__ import annotations

import argparse

CLUSTER_MODULE = "ondeck.operator.rollout_commands"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="ModelDeployment name (metadata.name)")
    parser.add_argument("--state-dir", metavar="DIR", help="the local run's state directory (default ./.ondeck/NAME)")
    parser.add_argument("--timeout", type=float, default=15.0, metavar="S",
                        help="promote/abort: how long to wait for the run to take the command (default %(default)s)")
    cluster = parser.add_argument_group("in a cluster (instead of a local ondeck run)")
    cluster.add_argument("-n", "--namespace", help="namespace of the ModelDeployment")
    cluster.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")


def configure_status(parser: argparse.ArgumentParser) -> None:
    configure(parser)
    parser.add_argument("--json", action="store_true", help="print the whole state as JSON")


def run(args) -> int:
    if args.namespace or args.kubeconfig:
        return _cluster(args)
    from ondeck.local.state import StateDir, default_dir

    state_dir = StateDir(args.state_dir or default_dir(args.name))
    if args.command == "status":
        return _status(args, state_dir)
    return _command(args, state_dir)


def _cluster(args) -> int:
    import importlib

    from ondeck.errors import UserError

    try:
        module = importlib.import_module(CLUSTER_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != CLUSTER_MODULE:
            raise
        raise UserError(f"--namespace/--kubeconfig: 'ondeck {args.command}' cannot reach a cluster yet; "
                        "without them it acts on a local 'ondeck run'") from None
    return module.run_command(args.command, args.name, namespace=args.namespace, kubeconfig=args.kubeconfig,
                              timeout=args.timeout, as_json=getattr(args, "json", False))


def _load(args, state_dir) -> dict:
    from ondeck.errors import UserError

    state = state_dir.load()
    if state is None:
        raise UserError(f"no local run of {args.name!r} in {state_dir.path}: start one with 'ondeck run MANIFEST' "
                        "(or pass the --state-dir it uses)")
    if state.get("name") != args.name:
        raise UserError(f"{state_dir.state_file} is the state of {state.get('name')!r}, not {args.name!r}")
    return state


def _status(args, state_dir) -> int:
    import json

    from ondeck.local.processes import run_alive
    from ondeck.local.view import render

    state = _load(args, state_dir)
    state["running"] = run_alive(state)  # false also when it was killed without a chance to say so
    if args.json:
        print(json.dumps(state, indent=1))
    else:
        print("\n".join(render(state, events=5)))
    return 0


def _command(args, state_dir) -> int:
    import time

    from ondeck.errors import UserError
    from ondeck.local.processes import run_alive

    state = _load(args, state_dir)
    if not run_alive(state):
        raise UserError(f"{args.name!r} is not running (state in {state_dir.path}); start it with "
                        f"'ondeck run {state.get('manifest', 'MANIFEST')}'")
    command_id = state_dir.post_command(args.command)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        answer = next((c for c in (state_dir.load() or {}).get("lastCommands", []) if c["id"] == command_id), None)
        if answer:
            if not answer["applied"]:
                raise UserError(answer["message"])
            print(f"ondeck {args.command} {args.name}: {answer['message']}")
            return 0
        time.sleep(0.1)  # the run answers in its state file on its next tick; nothing to wait on but the file
    withdrawn = (state_dir.commands_dir / f"{command_id}.json")
    if withdrawn.exists():
        withdrawn.unlink(missing_ok=True)
        raise UserError(f"the run of {args.name!r} did not take the command within {args.timeout:g}s; withdrawn")
    raise UserError(f"the run of {args.name!r} took the command but has not answered within {args.timeout:g}s; "
                    f"see 'ondeck status {args.name}'")
