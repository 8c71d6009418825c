"""Print a V2 proto's messages and service as JSON: python proto_fields.py MODULE (run in its own process)."""
from __future__ import annotations

import importlib
import json
import sys


def describe(file_descriptor) -> dict:
    """{message full name: {field name: [number, type, label, message type]}, service: {method: [in, out]}}."""
    out: dict = {"messages": {}, "service": {}}

    def walk(msg):
        out["messages"][msg.full_name] = {
            f.name: [f.number, f.type, _repeated(f), f.message_type.full_name if f.message_type else None]
            for f in msg.fields
        }
        for nested in msg.nested_types:
            walk(nested)

    for msg in file_descriptor.message_types_by_name.values():
        walk(msg)
    for svc in file_descriptor.services_by_name.values():
        if svc.full_name == "inference.GRPCInferenceService":
            out["service"] = {m.name: [m.input_type.full_name, m.output_type.full_name] for m in svc.methods}
    return out


def _repeated(field) -> bool:
    attr = getattr(field, "is_repeated", None)  # protobuf >= 5; older ones only have label
    if attr is None:
        return field.label == field.LABEL_REPEATED
    return attr() if callable(attr) else attr


if __name__ == "__main__":
    print(json.dumps(describe(importlib.import_module(sys.argv[1]).DESCRIPTOR)))
