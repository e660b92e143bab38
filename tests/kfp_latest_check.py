"""Load a compiled KFP v2 package with the NEWEST kfp SDK, the way a current KFP would.

Runs inside a throwaway environment that has only the latest `kfp` and `kfp-kubernetes`
(kfp >= 2.14 needs protobuf 6, which the project's own venv cannot hold), so it imports
nothing from this repository:

    python tests/kfp_latest_check.py PACKAGE.yaml

Not part of the test suite (it needs the package index): `make check-kfp-latest` builds the
environment and runs it, and the scheduled canary (.ci/canary) runs that.

Checks, in order (any failure exits 1 and names the step):
  0. the kfp it runs with is at least MIN_KFP (newer than the project's pin: an index or cache
     that hands out an old kfp would make the check say nothing);
  1. the file holds one PipelineSpec document and at most one platform document;
  2. the first document parses strictly (unknown fields fail) into
     kfp.pipeline_spec.pipeline_spec_pb2.PipelineSpec, the second into PlatformSpec;
  3. every task's componentRef, dependentTasks and every component's executorLabel resolve
     (the backend resolves them at run time; the SDK does not check them on load);
  4. every executor of the `kubernetes` platform parses strictly into kfp-kubernetes'
     KubernetesExecutorConfig and names an executor that exists in deploymentSpec;
  5. the KFP client's own package reader (what upload_pipeline and
     create_run_from_pipeline_package use) accepts the file;
  6. kfp.components.load_component_from_file loads it as a pipeline component;
  7. a new tiny @dsl.pipeline exposing the same parameters (types and defaults) calls it as
     a sub-pipeline, and kfp.compiler.Compiler compiles that; the result is reloaded and
     must still carry every task and the kubernetes executor config.
Then prints one line: kfp version, number of tasks, parameters with their types.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import tempfile
import traceback

# The in-memory type names kfp gives loaded inputs -> the annotation a @dsl.pipeline needs.
_PY_TYPES = {
    "String": str,
    "Integer": int,
    "Float": float,
    "Boolean": bool,
    "List": list,
    "Dict": dict,
}


MIN_KFP = (2, 14)  # the project venv is pinned to kfp 2.5.0; 2.14+ needs protobuf 6


class CheckFailed(Exception):
    pass


def _step(name, fn, *args, **kwargs):
    """Run one check; any exception becomes CheckFailed naming the step."""
    try:
        return fn(*args, **kwargs)
    except CheckFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of the SDK is a finding
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise CheckFailed(f"{name}: {detail}") from exc


def _versions():
    import google.protobuf
    import kfp

    out = {"kfp": kfp.__version__, "protobuf": google.protobuf.__version__}
    try:
        from importlib.metadata import version

        out["kfp-pipeline-spec"] = version("kfp-pipeline-spec")
    except Exception:  # noqa: BLE001
        pass
    try:
        import kfp.kubernetes

        out["kfp-kubernetes"] = kfp.kubernetes.__version__
    except ImportError:
        out["kfp-kubernetes"] = None
    return out


def _read_documents(path):
    import yaml

    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if not docs:
        raise CheckFailed(f"{path}: no YAML document")
    if len(docs) > 2:
        raise CheckFailed(f"{path}: {len(docs)} YAML documents; KFP reads one or two")
    pipeline_doc = docs[0]
    platform_doc = docs[1] if len(docs) == 2 else {}
    if not isinstance(pipeline_doc, dict) or "pipelineInfo" not in pipeline_doc:
        raise CheckFailed("first document is not a PipelineSpec (no pipelineInfo)")
    if "implementation" in pipeline_doc:
        raise CheckFailed("first document is a KFP v1 component, not a v2 PipelineSpec")
    return pipeline_doc, platform_doc


def _parse_protos(pipeline_doc, platform_doc):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = _step(
        "PipelineSpec (strict json_format.ParseDict)",
        json_format.ParseDict,
        pipeline_doc,
        pipeline_spec_pb2.PipelineSpec(),
        ignore_unknown_fields=False,
    )
    platform = _step(
        "PlatformSpec (strict json_format.ParseDict)",
        json_format.ParseDict,
        platform_doc,
        pipeline_spec_pb2.PlatformSpec(),
        ignore_unknown_fields=False,
    )
    return spec, platform


def _check_references(pipeline_doc):
    """What the KFP backend resolves at run time and the SDK never checks on load."""
    components = pipeline_doc.get("components") or {}
    executors = (pipeline_doc.get("deploymentSpec") or {}).get("executors") or {}
    problems = []
    dags = {"root": pipeline_doc.get("root") or {}, **components}
    for owner, comp in dags.items():
        label = comp.get("executorLabel")
        if label is not None and label not in executors:
            problems.append(f"component {owner!r} names missing executor {label!r}")
        tasks = (comp.get("dag") or {}).get("tasks") or {}
        for task_name, task in tasks.items():
            ref = (task.get("componentRef") or {}).get("name")
            if ref not in components:
                problems.append(
                    f"task {task_name!r} in {owner!r} refers to missing component {ref!r}"
                )
            for dep in task.get("dependentTasks") or []:
                if dep not in tasks:
                    problems.append(
                        f"task {task_name!r} in {owner!r} depends on missing task {dep!r}"
                    )
    if problems:
        raise CheckFailed("dangling references: " + "; ".join(problems))


def _check_kubernetes(platform_doc, pipeline_doc):
    """Parse each kubernetes executor config; return how many were checked (None: no kfp-kubernetes)."""
    k8s = (platform_doc.get("platforms") or {}).get("kubernetes")
    if k8s is None:
        return 0
    try:
        from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
    except ImportError:
        print(
            "note: kfp-kubernetes is not installed; kubernetes executor configs not parsed",
            file=sys.stderr,
        )
        return None
    from google.protobuf import json_format

    executors = (k8s.get("deploymentSpec") or {}).get("executors") or {}
    known = set(((pipeline_doc.get("deploymentSpec") or {}).get("executors") or {}).keys())
    for label, body in sorted(executors.items()):
        _step(
            f"KubernetesExecutorConfig for executor {label!r} (strict json_format.ParseDict)",
            json_format.ParseDict,
            body,
            k8s_pb2.KubernetesExecutorConfig(),
            ignore_unknown_fields=False,
        )
        if label not in known:
            raise CheckFailed(
                f"kubernetes platform config names executor {label!r}, which is not in "
                f"deploymentSpec.executors ({sorted(known)}); KFP would never apply it"
            )
    return len(executors)


def _client_reader(path):
    """The reader Client.upload_pipeline / create_run_from_pipeline_package use (private API)."""
    from kfp.client import client as client_module

    reader = getattr(client_module, "_extract_pipeline_yaml", None)
    if reader is None:
        print("note: kfp.client.client._extract_pipeline_yaml not found; skipped", file=sys.stderr)
        return False
    _step("kfp.Client package reader (_extract_pipeline_yaml)", reader, path)
    return True


def _wrapper_pipeline(component):
    """A @dsl.pipeline with the loaded pipeline's parameters, passing each one through."""
    from kfp import dsl

    params = []
    for name, spec in component.component_spec.inputs.items():
        if spec.type not in _PY_TYPES:
            raise CheckFailed(
                f"pipeline input {name!r} has type {spec.type!r}; a top-level pipeline "
                "input must be a parameter"
            )
        default = spec.default if spec.optional else inspect.Parameter.empty
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=default,
                annotation=_PY_TYPES[spec.type],
            )
        )

    names = [p.name for p in params]

    def kfp_latest_check_wrapper(*args, **kwargs):
        # kfp calls the pipeline function positionally, in signature order.
        component(**dict(zip(names, args, strict=False)), **kwargs)

    kfp_latest_check_wrapper.__signature__ = inspect.Signature(params)
    return dsl.pipeline(name="kfp-latest-check-wrapper")(kfp_latest_check_wrapper)


def _compile_wrapper(component, n_tasks, n_k8s):
    from kfp import compiler, components

    wrapper = _step("@dsl.pipeline using the loaded pipeline", _wrapper_pipeline, component)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "wrapper.yaml")
        _step("kfp.compiler.Compiler().compile(wrapper)", compiler.Compiler().compile, wrapper, out)
        reloaded = _step(
            "reload compiled wrapper", components.load_component_from_file, out
        ).pipeline_spec
        with open(out) as f:
            text = f.read()
    pipeline_doc, platform_doc = _read_documents_text(text)
    _parse_protos(pipeline_doc, platform_doc)
    # The wrapper's root has one task (the sub-pipeline); its component's dag holds ours.
    sub_tasks = [
        len(c.dag.tasks)
        for c in reloaded.components.values()
        if c.WhichOneof("implementation") == "dag"
    ]
    if n_tasks not in sub_tasks:
        raise CheckFailed(
            f"compiled wrapper lost tasks: sub-pipeline DAGs have {sub_tasks}, expected {n_tasks}"
        )
    if n_k8s:
        got = len(
            ((platform_doc.get("platforms") or {}).get("kubernetes") or {})
            .get("deploymentSpec", {})
            .get("executors", {})
        )
        if got != n_k8s:
            raise CheckFailed(
                f"compiled wrapper carries kubernetes config for {got} executors, expected {n_k8s}"
            )


def _read_documents_text(text):
    import yaml

    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    return docs[0], (docs[1] if len(docs) > 1 else {})


def check(path):
    from kfp import components

    versions = _versions()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    found = re.match(r"(\d+)\.(\d+)", versions["kfp"])
    if not found or tuple(map(int, found.groups())) < MIN_KFP:
        raise CheckFailed(
            f"kfp {versions['kfp']} is not the newest release (expected >= "
            f"{MIN_KFP[0]}.{MIN_KFP[1]}): the environment was not upgraded"
        )

    pipeline_doc, platform_doc = _step("read YAML documents", _read_documents, path)
    spec, _ = _parse_protos(pipeline_doc, platform_doc)
    _check_references(pipeline_doc)
    n_k8s = _check_kubernetes(platform_doc, pipeline_doc)
    client_ok = _client_reader(path)

    component = _step(
        "kfp.components.load_component_from_file", components.load_component_from_file, path
    )
    if component.component_spec.implementation.graph is None:
        raise CheckFailed("load_component_from_file did not load a pipeline (no DAG)")
    n_tasks = len(spec.root.dag.tasks)
    _compile_wrapper(component, n_tasks, n_k8s)

    root_params = (pipeline_doc["root"].get("inputDefinitions") or {}).get("parameters") or {}
    params = ", ".join(f"{n}:{p.get('parameterType')}" for n, p in sorted(root_params.items()))
    k8s = "not checked (kfp-kubernetes missing)" if n_k8s is None else f"{n_k8s} executors"
    print(
        f"OK kfp {versions['kfp']} (kfp-kubernetes {versions['kfp-kubernetes']}) loads "
        f"{spec.pipeline_info.name!r} schema {spec.schema_version}: {n_tasks} tasks, "
        f"parameters [{params}], kubernetes config {k8s}, "
        f"client reader {'ok' if client_ok else 'skipped'}, recompiled as sub-pipeline"
    )


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} PACKAGE.yaml", file=sys.stderr)
        return 2
    path = argv[1]
    if not os.path.isfile(path):
        print(f"FAIL: {path}: no such file", file=sys.stderr)
        return 1
    try:
        check(path)
    except CheckFailed as exc:
        print(f"FAIL: {path} fails the newest-kfp check: {exc}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - a bug here must still fail loudly
        traceback.print_exc()
        print(f"FAIL: checking {path} raised unexpectedly (see traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
