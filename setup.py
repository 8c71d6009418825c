"""Package layout only; all metadata lives in pyproject.toml.

The data plane (serving/) and the control plane (operator/) sit beside the shared core (ondeck/)
so that a newcomer tells them apart by folder, yet they import as ``ondeck.serving`` and
``ondeck.operator``: a top-level ``operator`` package would shadow the standard library.
"""
from setuptools import find_packages, setup

ROOTS = {"ondeck": "ondeck", "ondeck.serving": "serving", "ondeck.operator": "operator"}


def _packages(name: str, folder: str) -> list[str]:
    return [name] + [f"{name}.{sub}" for sub in find_packages(folder)]


# operator/ has no __init__.py on purpose (see operator/README.md); setuptools still packs its modules.


setup(
    package_dir=ROOTS,
    packages=[pkg for name, folder in ROOTS.items() for pkg in _packages(name, folder)],
)
