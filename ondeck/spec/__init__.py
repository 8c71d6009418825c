"""The ModelDeployment resource: one model of the spec for the CRD, the operator and ``ondeck run``."""
from __future__ import annotations

from ondeck.spec.model import API_GROUP, API_VERSION, KIND, PLURAL, ModelDeployment, ModelDeploymentSpec
from ondeck.spec.validate import Problem, SpecError, load_manifest, parse_manifest

__all__ = ["API_GROUP", "API_VERSION", "KIND", "PLURAL", "ModelDeployment", "ModelDeploymentSpec", "Problem",
           "SpecError", "load_manifest", "parse_manifest"]
