"""Our hand-written grpc_predict_v2.proto is wire-compatible with the official clients' own copies.

Every field of the core messages in tritonclient's and kserve's descriptors must be ours too with the same
number, type and cardinality (a field only we define must not reuse one of their numbers), and every
RPC must have the same request and response types. (Each client's
descriptor is read in its own process: their `inference.*` symbols clash in one default pool.)
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .proto_fields import describe


def theirs(module: str) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("proto_fields.py")), module],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("module", ["tritonclient.grpc.service_pb2", "kserve.protocol.grpc.grpc_predict_v2_pb2"])
def test_wire_compatible(module):
    from ondeck.serving.protocol import grpc_predict_v2_pb2

    ours, other = describe(grpc_predict_v2_pb2.DESCRIPTOR), theirs(module)
    assert ours["messages"], "no messages read from our descriptor"
    for message, fields in ours["messages"].items():
        if message.startswith("inference.Repository"):
            continue  # the model-repository extension: tritonclient's numbers differ from kserve's; we answer UNIMPLEMENTED
        assert message in other["messages"], f"{module} has no {message}"
        their_fields = other["messages"][message]
        for name, spec in their_fields.items():  # everything they send, we read the same way
            assert fields.get(name) == spec, f"{message}.{name}: {module} {spec}, ours {fields.get(name)}"
        their_numbers = {spec[0] for spec in their_fields.values()}
        for name, spec in fields.items():  # what only we define (e.g. InferParameter.double_param) collides with nothing
            assert name in their_fields or spec[0] not in their_numbers, f"{message}.{name} reuses a number of {module}"
    for method, types in ours["service"].items():
        if method.startswith("Repository"):
            continue
        assert other["service"].get(method) == types, f"{method}: ours {types}, {module} {other['service'].get(method)}"
