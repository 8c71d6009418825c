"""Model package URIs: where a variant's package comes from.

``file:///models/churn/v1``     a directory that is already there (in the image, or on this machine)
``pvc://<claim>/<path>``        a directory in a PersistentVolumeClaim, mounted read-only
``http(s)://host/pkg.tar.gz``   an archive fetched and checked against ``sha256`` before serving

The scheme check is not in the CRD: an unknown scheme is accepted by the apiserver and reported on
the object as a status condition (reason ``UnsupportedModelURI``), where a person looking at a
stuck deployment will see it. :func:`parse_uri` gives the same message to the operator and to
``ondeck run``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ondeck.errors import UserError

SCHEMES = ("file", "pvc", "http", "https")
_CLAIM = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class UnsupportedURI(UserError):
    """A model URI ondeck cannot fetch; the message says which forms it can."""


@dataclass(frozen=True)
class ModelURI:
    scheme: str  # file | pvc | http | https
    path: str  # file: absolute path; pvc: path inside the claim ("" for its root); http(s): unused
    claim: str | None = None  # pvc only
    url: str | None = None  # http(s) only

    @property
    def fetched(self) -> bool:
        return self.scheme in ("http", "https")


def parse_uri(uri: str) -> ModelURI:
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UnsupportedURI(f"unsupported model URI {uri!r}: use file:///path, pvc://<claim>/<path> or "
                             "https://host/package.tar.gz (with sha256)")
    if scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise UnsupportedURI(f"model URI {uri!r}: a file URI needs an absolute path, e.g. file:///models/churn/v1")
        return ModelURI(scheme, parts.path)
    if scheme == "pvc":
        if not _CLAIM.match(parts.netloc):
            raise UnsupportedURI(f"model URI {uri!r}: pvc://<claim>/<path> needs a claim name, e.g. pvc://models/churn/v1")
        path = parts.path.strip("/")
        if ".." in path.split("/"):
            raise UnsupportedURI(f"model URI {uri!r}: the path may not contain '..'")
        return ModelURI(scheme, path, claim=parts.netloc)
    if not parts.netloc:
        raise UnsupportedURI(f"model URI {uri!r}: no host")
    return ModelURI(scheme, "", url=uri)
