"""JSON schemas for kubeconform, made offline from the sources Kubernetes and the CRDs ship.

kubeconform looks a manifest's schema up by a path template; its default is a web address, which
tests cannot reach. This module writes the same layout locally, for the kinds the tests render:

- core kinds from Kubernetes' own OpenAPI v2 document (``api/openapi-spec/swagger.json`` of the
  ``k8s.io/kubernetes`` module), one standalone file per kind whose ``$ref``s point into a
  ``definitions`` section holding only what the kind reaches;
- custom resources (KEDA, the Prometheus operator) from their CRDs' ``openAPIV3Schema``.

Both are made strict the way kubectl validates and openapi2jsonschema/kubeconform's own
conversion do: an object schema that lists its properties admits no others (unless it says
``x-kubernetes-preserve-unknown-fields``), ``int-or-string`` accepts either, and a resource
``Quantity`` accepts a number or a string (``cpu: 2`` as well as ``memory: 1Gi``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
REF_PREFIX = "#/definitions/"


class _CrdLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML, plus the bare ``=`` some CRDs carry (YAML 1.1's ``value`` tag) as a string."""


_CrdLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: str(node.value))


def kind_file(api_version: str, kind: str) -> str:
    """kubeconform's ``{{ .ResourceKind }}{{ .KindSuffix }}.json`` for a manifest.

    >>> kind_file("apps/v1", "Deployment"), kind_file("v1", "Service")
    ('deployment-apps-v1.json', 'service-v1.json')
    >>> kind_file("keda.sh/v1alpha1", "ScaledObject")
    'scaledobject-keda-v1alpha1.json'
    """
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix.lower()}.json"


def strict(node: Any) -> Any:
    """Close every object schema that lists its properties; fix int-or-string (in place)."""
    if isinstance(node, dict):
        if node.get("format") == "int-or-string":
            node.pop("format")
            node.pop("type", None)
            node["oneOf"] = [{"type": "string"}, {"type": "integer"}]
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)
    return node


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            yield ref[len(REF_PREFIX) :]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


class SchemaStore:
    """A folder of kubeconform schemas, filled on demand for the kinds a test renders."""

    def __init__(self, root: Path, k8s_version: str, swagger: Path, crds: Iterable[Path]) -> None:
        self.root = root
        self.k8s_version = k8s_version.lstrip("v")
        self.core_dir = root / f"v{self.k8s_version}-standalone-strict"
        self.crd_dir = root / "crds"
        self._swagger = swagger
        self._crd_files = list(crds)
        self._definitions: dict[str, Any] | None = None
        self._crds: dict[tuple[str, str], dict[str, Any]] | None = None

    def locations(self) -> list[str]:
        """``-schema-location`` templates: core kinds first, then the CRDs."""
        core = "{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}"
        return [
            f"{self.root}/{core}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            f"{self.crd_dir}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        ]

    def prepare(self, manifests: Iterable[dict[str, Any]]) -> None:
        """Write the schema of every (apiVersion, kind) among ``manifests`` that has one."""
        for doc in manifests:
            api_version, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
            name = kind_file(api_version, kind)
            if (self.core_dir / name).exists() or (self.crd_dir / name).exists():
                continue
            core = self._core_schema(api_version, kind)
            if core is not None:
                self._write(self.core_dir / name, core)
                continue
            crd = self._crd_index().get((api_version, kind))
            if crd is not None:
                self._write(self.crd_dir / name, strict(copy.deepcopy(crd)))

    @staticmethod
    def _write(path: Path, schema: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(schema))
        tmp.replace(path)

    def _defs(self) -> dict[str, Any]:
        if self._definitions is None:
            definitions = json.loads(self._swagger.read_text())["definitions"]
            definitions[QUANTITY] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
            self._definitions = definitions
        return self._definitions

    def _core_schema(self, api_version: str, kind: str) -> dict[str, Any] | None:
        group, _, version = api_version.rpartition("/")
        defs = self._defs()
        for name, schema in defs.items():
            gvks = schema.get("x-kubernetes-group-version-kind", [])
            if {"group": group, "version": version, "kind": kind} in gvks:
                reached, todo = {}, [name]
                while todo:
                    ref = todo.pop()
                    if ref not in reached:
                        reached[ref] = defs[ref]
                        todo.extend(_refs(defs[ref]))
                body = strict(copy.deepcopy(schema))
                body["definitions"] = strict(copy.deepcopy(reached))
                return dict(body)
        return None

    def _crd_index(self) -> dict[tuple[str, str], dict[str, Any]]:
        if self._crds is None:
            index: dict[tuple[str, str], dict[str, Any]] = {}
            for path in self._crd_files:
                for crd in yaml.load_all(path.read_text(), Loader=_CrdLoader):
                    if not crd or crd.get("kind") != "CustomResourceDefinition":
                        continue
                    spec = crd["spec"]
                    for version in spec.get("versions", []):
                        schema = version.get("schema", {}).get("openAPIV3Schema")
                        if schema is not None:
                            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                            index[key] = schema
            self._crds = index
        return self._crds
