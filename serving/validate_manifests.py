"""Checks KServe InferenceService YAML against the kserve SDK's models (kserve 0.15, .venv-serving).

    .venv-serving/bin/python serving/validate_manifests.py FILE...

Each InferenceService is deserialized into kserve's V1beta1InferenceService (its predictor a
V1beta1PredictorSpec, its transformer a V1beta1TransformerSpec) and serialized back with the
kserve ApiClient; the result must equal the YAML, so a misspelled, misplaced or unknown field
(which a model silently drops) or a wrongly typed value fails with its path; so does a
transformer without a container (kserve's webhook refuses it). A Kustomization file stands for
the resources it lists. One line per file; exit status 1 when any file fails.

kserve 0.15's models are swagger-codegen classes (openapi_types, attribute_map), the Kubernetes
ones inside them (V1Container, V1ObjectMeta, ...) come from kubernetes 37's pydantic client, and
neither ApiClient can build the other's: kserve's looks every type up in kserve.models, the
kubernetes one calls from_dict, which kserve's classes lack. So this walks kserve's classes as
kserve's ApiClient does and hands every Kubernetes type to the kubernetes ApiClient's deserializer.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

# Run as a script, this folder is sys.path[0]: its modules (metrics.py, cli.py, ...) must not
# shadow the top-level modules that yaml, kserve and their dependencies import.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import yaml  # noqa: E402

API_VERSION, KIND = "serving.kserve.io/v1beta1", "InferenceService"
_PRIMITIVES = {"str": str, "int": int, "float": float, "bool": bool}


class ManifestError(ValueError):
    """A manifest does not survive the models; the message names the field."""


def _deserialize(data: Any, type_name: str, path: str) -> Any:
    import kserve.models
    import kubernetes.client

    if data is None:
        return None
    if match := re.fullmatch(r"list\[(.*)\]", type_name):
        if not isinstance(data, list):
            raise ManifestError(f"{path}: a list expected, got {data!r}")
        return [_deserialize(item, match[1], f"{path}[{i}]") for i, item in enumerate(data)]
    if match := re.fullmatch(r"dict\(([^,]*), (.*)\)", type_name):
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: a mapping expected, got {data!r}")
        return {key: _deserialize(value, match[2], f"{path}.{key}") for key, value in data.items()}
    if type_name == "object":
        return data
    if type_name in _PRIMITIVES:  # as the CRD's schema types them: "10" is not an int
        wanted = _PRIMITIVES[type_name]
        ok = isinstance(data, wanted) and not (wanted is not bool and isinstance(data, bool))
        if not ok and not (
            wanted is float and isinstance(data, int) and not isinstance(data, bool)
        ):
            raise ManifestError(f"{path}: {data!r} is not of type {type_name}")
        return data
    model = getattr(kserve.models, type_name, None)
    if model is not None:  # a kserve class: every known field by its JSON name, as kserve does
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: a {type_name} mapping expected, got {data!r}")
        values = {
            attribute: _deserialize(data[key], kind, f"{path}.{key}" if path else key)
            for attribute, kind in model.openapi_types.items()
            if (key := model.attribute_map[attribute]) in data
        }
        try:
            return model(**values)
        except ValueError as err:  # kserve's client-side validation (required fields, enums)
            raise ManifestError(f"{path or type_name}: {err}") from err
    if not hasattr(kubernetes.client.models, type_name):
        raise ManifestError(f"{path}: no kserve or kubernetes model named {type_name}")
    try:
        return kubernetes.client.ApiClient().deserialize(
            json.dumps(data), type_name, "application/json"
        )
    except Exception as err:  # pydantic's ValidationError: a wrong type or a missing field
        details = [
            f"{e.get('loc') and '.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
            for e in getattr(err, "errors", lambda: [])()
        ] or [str(err)]
        raise ManifestError(f"{path}: not a valid {type_name}: {'; '.join(details)}") from err


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Paths where `actual` differs from `expected` (keys lost, added or changed)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key in sorted(expected.keys() | actual.keys(), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                found.append(f"{where}: dropped by the model (unknown or misspelled field?)")
            elif key not in expected:
                found.append(f"{where}: added by the model ({actual[key]!r})")
            else:
                found += differences(expected[key], actual[key], where)
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(expected)} items became {len(actual)}"]
        found = []
        for index, (item, back) in enumerate(zip(expected, actual, strict=True)):
            found += differences(item, back, f"{path}[{index}]")
        return found
    if expected != actual or type(expected) is not type(actual):
        return [f"{path}: {expected!r} became {actual!r}"]
    return []


def check(manifest: dict) -> Any:
    """The V1beta1InferenceService of one manifest; ManifestError naming the field otherwise."""
    from kserve.api_client import ApiClient

    if not isinstance(manifest, dict):
        raise ManifestError(f"not a mapping: {manifest!r}")
    found = (manifest.get("apiVersion"), manifest.get("kind"))
    if found != (API_VERSION, KIND):
        raise ManifestError(f"apiVersion/kind {found}: expected {(API_VERSION, KIND)}")
    service = _deserialize(manifest, "V1beta1InferenceService", "")
    problems = differences(manifest, ApiClient().sanitize_for_serialization(service))
    transformer = service.spec.transformer
    if transformer is not None and not transformer.containers:
        # KServe's webhook wants exactly one implementation, and a custom transformer is its
        # containers (the controller runs containers[0] as kserve-container)
        problems.append("spec.transformer.containers: a transformer needs its container")
    if problems:
        raise ManifestError("; ".join(problems))
    return service


def _documents(path: Path) -> list[tuple[Path, dict]]:
    """(file, object) pairs; a Kustomization contributes the files it lists."""
    found = []
    for document in yaml.safe_load_all(path.read_text()):
        if document is None:
            continue
        if isinstance(document, dict) and document.get("kind") == "Kustomization":
            for resource in document.get("resources", []):
                found += _documents(path.parent / resource)
        else:
            found.append((path, document))
    return found


def _describe(service: Any) -> str:
    predictor = service.spec.predictor
    where = f"{service.metadata.namespace}/{service.metadata.name}"
    if predictor.model is not None:
        kind = f"{predictor.model.model_format.name} model, {predictor.model.protocol_version}"
    else:
        env = {e.name: e.value for e in predictor.containers[0].env or []}
        kind = f"custom container, {env.get('PROTOCOL', 'v1')}"
    canary = predictor.canary_traffic_percent
    about = f"InferenceService {where} ({kind}" + (f", canary {canary}%)" if canary else ")")
    transformer = service.spec.transformer
    if transformer is not None:
        # the protocol it calls the predictor with: kserve's ModelServer flag, v1 unless given
        args = transformer.containers[0].args or []
        protocol = next(
            (a.split("=", 1)[1] for a in args if a.startswith("--predictor_protocol=")), "v1"
        )
        about += f" + transformer (predictor over {protocol})"
    return about


def main(argv: list[str] | None = None) -> int:
    files = sys.argv[1:] if argv is None else argv
    if not files:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    failed = 0
    for name in files:
        try:
            documents = _documents(Path(name))
        except (OSError, yaml.YAMLError) as err:
            print(f"FAIL {name}: {err}")
            failed += 1
            continue
        for path, document in documents:
            try:
                print(f"ok   {path}: {_describe(check(document))}")
            except ManifestError as err:
                print(f"FAIL {path}: {err}")
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
