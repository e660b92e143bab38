"""A stand-in for the open-source KFP v2 backend: runs a compiled pipeline package task by task,
each task in the built image, handing its executor exactly what KFP's driver and launcher would.

Mirrored from kubeflow/pipelines backend/src/v2 at tag 2.17.0 (commit 4a3592cb2dd0), field by
field; where 2.0.5 differs it says so:
- Pipeline root (driver/root_dag.go RootDAG): the run's runtimeConfig.pipelineRoot, else the
  kfp-launcher ConfigMap's defaultPipelineRoot, else minio://mlpipeline/v2/artifacts; the spec's
  defaultPipelineRoot is never read. objectstore/config.go ParseBucketPathToConfig refuses a plain
  path ("unrecognized pipeline root format") and any scheme but gs, s3, minio ("unsupported Cloud
  bucket"). The run root is <root>/<pipelineInfo.name>/<run id>.
- Outputs (driver/driver.go provisionOutputs, metadata.GenerateOutputURI): every output artifact at
  <run root>/<task>/<uuid4>/<key>, `name` = the key (2.15+), `type` copied from the component's
  outputDefinitions; with publish_logs (the default since 2.5.0) one more output,
  `executor-logs-<retry index>` (2.17; `executor-logs` in 2.5-2.16) typed system.Artifact, into
  which the launcher uploads the step's stdout/stderr.
- Inputs (metadata/converter.go toRuntimeArtifact, metadata/client.go): `name` = the ML Metadata
  id as a decimal string, `type` = {"instanceSchema": ""} (client.go sets Schema ""), `uri` and
  `metadata` from ML Metadata, where what the producer reported went through
  StructValueToMLMDValue and back: numbers as doubles, bools as 1/0, lists as {"list": [...]},
  structs as {"struct": {...}}, plus `display_name` (the output key) and `store_session_info`
  (a JSON string) that RecordArtifact adds.
- Parameters (driver resolve + launcher addDefaultParams): bound inputs only, numbers as float64;
  STRING parameters take any value as text; other types must match the value's kind; the
  component's defaults are added for `{{$}}` by the launcher.
- outputs.outputFile (2.15+): <local task root>/output_metadata.json, pod-local and not uploaded.
- Launcher (component/launcher_v2.go): downloads every gs/minio/s3 input before the command to
  its local path (s3://b/k -> /s3/b/k; a key equal to the prefix is a file, keys below it a
  folder, nothing found is no error); runs the command with the image's USER, WORKDIR and ENV,
  the component's env, Secrets as env (kfp-kubernetes secretAsEnv), KFP_POD_NAME and KFP_POD_UID;
  on success uploads each output's local path (missing: a warning) and refuses an output URI
  outside the run root ("does not have expected bucket prefix"); reads the executor output file
  strictly (a missing one is an empty output) and merges back only `uri`, `metadata` (key by key)
  and `customPath` of each output's first artifact (mergeRuntimeArtifacts); publishes outputs to
  ML Metadata (an in-memory stand-in here).

Not emulated: Kubernetes itself (scheduling, resources, retries, the driver pod), caching, the
kfp-launcher `providers` block (the object store's endpoint and keys are given directly), and
workspaces. Refused before anything runs: what open-source KFP would not run
(pipelines.kfp_spec.unsupported_features), PVC mounts without a host folder, and placeholders
not implemented here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipelines import kfp_spec

BACKEND_VERSION = "2.17.0"
DEFAULT_PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"
LOCAL_ROOTS = {"gs": "/gcs", "minio": "/minio", "s3": "/s3"}
PLACEHOLDER = re.compile(r"\{\{\$[^}]*\}\}")
_BUCKET_PATTERN = re.compile(r"(^[a-z][a-z0-9]+:///?)([^/?]+)(/[^?]*)?(\?.+)?$")
_EXECUTOR_OUTPUT_FIELDS = {"artifacts", "parameterValues", "parameters"}


class HarnessError(RuntimeError):
    """A task failed, or the run is one the KFP backend would refuse; the message says which."""


class ObjectStore(Protocol):
    """What the launcher does with the bucket (tests/object_store.S3Server)."""

    def download_prefix(self, uri: str, local_dir: Path) -> int: ...
    def upload_path(self, local: Path, uri: str) -> int: ...


class TaskRunner(Protocol):
    """Runs one task's command the way its pod would (tests/podman: the built image)."""

    def __call__(
        self, command: list[str], *, env: dict[str, str], mounts: dict[str, Path], log_path: Path
    ) -> int: ...


# -- pure parts of the contract (unit-tested) ---------------------------------------------------
def resolve_pipeline_root(runtime_root: str | None, launcher_config: dict[str, str] | None) -> str:
    """RootDAG's order, then ParseBucketPathToConfig's check, with the backend's messages."""
    root = (
        runtime_root or (launcher_config or {}).get("defaultPipelineRoot") or DEFAULT_PIPELINE_ROOT
    )
    match = _BUCKET_PATTERN.match(root)
    if not match:
        raise HarnessError(
            f"parse bucket config failed: unrecognized pipeline root format: {root!r}"
        )
    if match.group(1) not in ("gs://", "s3://", "minio://"):
        raise HarnessError(f"parse bucket config failed: unsupported Cloud bucket: {root!r}")
    return root.split("?", 1)[0].rstrip("/")


def local_path_for_uri(uri: str) -> str:
    """LocalPathForURI: s3://b/k -> /s3/b/k (gs -> /gcs, minio -> /minio)."""
    scheme, _, rest = uri.partition("://")
    if scheme not in LOCAL_ROOTS:
        raise HarnessError(f"{uri!r}: no local path for scheme {scheme!r}")
    return f"{LOCAL_ROOTS[scheme]}/{rest}"


def mlmd_round_trip(value: Any) -> Any:
    """A metadata value as the next task reads it back from ML Metadata."""
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return {"list": value}
    if isinstance(value, dict):
        return {"struct": value}
    raise HarnessError(f"metadata value {value!r}: unknown/unsupported value type")


def coerce_parameter(name: str, value: Any, parameter_type: str) -> Any:
    """A parameter value as the driver hands it on (structpb: every number a float64)."""
    if value is None:
        return None
    if parameter_type == "STRING":
        if isinstance(value, str):
            return value
        return json.dumps(value) if isinstance(value, dict | list) else _go_text(value)
    kinds = {
        "NUMBER_INTEGER": (int, float),
        "NUMBER_DOUBLE": (int, float),
        "BOOLEAN": (bool,),
        "LIST": (list,),
        "STRUCT": (dict,),
    }
    expected = kinds.get(parameter_type)
    if expected is None:
        raise HarnessError(f"parameter {name!r}: type {parameter_type!r} not implemented")
    if isinstance(value, bool) and parameter_type != "BOOLEAN" or not isinstance(value, expected):
        raise HarnessError(
            f"input parameter {name!r} requires type {parameter_type}, got {type(value).__name__}"
        )
    return float(value) if parameter_type.startswith("NUMBER") else value


def _go_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- the in-memory ML Metadata stand-in ----------------------------------------------------------
@dataclass
class RecordedArtifact:
    id: int
    uri: str
    metadata: dict[str, Any]  # as the producer's launcher recorded it (before the round trip)


@dataclass
class MetadataStore:
    artifacts: dict[int, RecordedArtifact] = field(default_factory=dict)

    def record(
        self, output_key: str, artifact: dict[str, Any], session_info: str
    ) -> RecordedArtifact:
        metadata = dict(artifact.get("metadata") or {})
        metadata.setdefault("display_name", output_key)
        metadata.setdefault("store_session_info", session_info)
        for value in metadata.values():
            mlmd_round_trip(value)  # refuse what MLMD cannot store, at publish time
        recorded = RecordedArtifact(len(self.artifacts) + 1, artifact["uri"], metadata)
        self.artifacts[recorded.id] = recorded
        return recorded

    def runtime_artifact(self, artifact_id: int) -> dict[str, Any]:
        """toRuntimeArtifact of a task output: what the consuming task's ExecutorInput holds."""
        recorded = self.artifacts[artifact_id]
        return {
            "name": str(recorded.id),
            "type": {"instanceSchema": ""},
            "uri": recorded.uri,
            "metadata": {k: mlmd_round_trip(v) for k, v in recorded.metadata.items()},
        }


# -- a run ----------------------------------------------------------------------------------------
@dataclass
class TaskResult:
    name: str
    seconds: float
    command: list[str]
    executor_input: dict[str, Any]
    outputs: dict[str, int]  # output key -> ML Metadata id
    log_path: Path


@dataclass
class HarnessRun:
    run_id: str
    root: str  # <pipeline root>/<pipeline name>/<run id>
    store: MetadataStore
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the whole run

    def artifact(self, task: str, output: str) -> RecordedArtifact:
        return self.store.artifacts[self.tasks[task].outputs[output]]

    def artifact_uri(self, task: str, output: str) -> str:
        return self.artifact(task, output).uri


def upstream_tasks(spec: kfp_spec.PipelineSpec) -> dict[str, set[str]]:
    """Each task's dependentTasks plus the producers of its input artifacts."""
    needs = {}
    for name, task in spec["root"]["dag"]["tasks"].items():
        upstream = set(task.get("dependentTasks", []))
        for artifact in task.get("inputs", {}).get("artifacts", {}).values():
            if "taskOutputArtifact" in artifact:
                upstream.add(artifact["taskOutputArtifact"]["producerTask"])
        needs[name] = upstream
    return needs


def topological_order(spec: kfp_spec.PipelineSpec) -> list[str]:
    tasks = spec["root"]["dag"]["tasks"]
    needs = upstream_tasks(spec)
    unknown = {dep for deps in needs.values() for dep in deps} - set(tasks)
    if unknown:
        raise HarnessError(f"tasks depend on tasks that do not exist: {sorted(unknown)}")
    order: list[str] = []
    while len(order) < len(tasks):
        ready = sorted(n for n in tasks if n not in order and needs[n] <= set(order))
        if not ready:
            raise HarnessError(f"dependency cycle among {sorted(set(tasks) - set(order))}")
        order += ready
    return order


def resolve_run_parameters(
    spec: kfp_spec.PipelineSpec, overrides: dict[str, Any] | None
) -> dict[str, Any]:
    """The run's parameters: the spec's defaults, then the run's values, kinds checked."""
    definitions = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    unknown = set(overrides or {}) - set(definitions)
    if unknown:
        raise HarnessError(
            f"unknown run parameters {sorted(unknown)}; known: {sorted(definitions)}"
        )
    values = {}
    for name, definition in definitions.items():
        if overrides and name in overrides:
            value = overrides[name]
        elif "defaultValue" in definition:
            value = definition["defaultValue"]
        elif definition.get("isOptional"):
            value = None
        else:
            raise HarnessError(f"run parameter {name!r} has no default and no value")
        values[name] = coerce_parameter(name, value, definition["parameterType"])
    return values


class LocalKfpHarness:
    """Runs a package's root DAG, up to `parallelism` tasks at a time, each through `runner`."""

    def __init__(
        self,
        package_path: str | Path,
        *,
        runner: TaskRunner,
        store: ObjectStore,
        work_dir: str | Path,
        pipeline_root: str | None = None,
        launcher_config: dict[str, str] | None = None,
        secrets: dict[str, dict[str, str]] | None = None,
        publish_logs: bool = True,
        session_info: str = '{"Provider":"s3","Params":{"fromEnv":"true"}}',
        progress: Callable[[str], None] | None = print,
    ):
        self.spec, self.platform = kfp_spec.read_package(package_path)
        problems = kfp_spec.unsupported_features(self.spec)
        if problems:
            raise HarnessError(
                "refusing to run: open-source KFP v2 would not run this spec:\n  "
                + "\n  ".join(problems)
            )
        self.pipeline_root = resolve_pipeline_root(pipeline_root, launcher_config)
        self.runner, self.object_store = runner, store
        self.work_dir = Path(work_dir)
        self.secrets = secrets or {}
        self.publish_logs = publish_logs
        self.session_info = session_info
        self.progress = progress

    def run(
        self,
        parameters: dict[str, Any] | None = None,
        parallelism: int = 2,
        only: set[str] | None = None,
    ) -> HarnessRun:
        """Runs every task (or those in `only`, each once its upstream tasks did) in dependency
        order; the first failure stops the run with the task's log tail."""
        values = resolve_run_parameters(self.spec, parameters)
        run_id = str(uuid.uuid4())
        run = HarnessRun(
            run_id, f"{self.pipeline_root}/{self.spec['pipelineInfo']['name']}/{run_id}",
            MetadataStore(),
        )  # fmt: skip
        needs = upstream_tasks(self.spec)
        pending = set(topological_order(self.spec)) & (only or set(needs))
        running: dict[Future, str] = {}
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=parallelism) as pool:
            while pending or running:
                ready = sorted(n for n in pending if needs[n] <= set(run.tasks))
                if not ready and not running:
                    raise HarnessError(f"tasks {sorted(pending)} wait for tasks not run")
                for name in ready[: parallelism - len(running)]:
                    pending.discard(name)
                    self._say(f"{name} started", run, len(needs))
                    running[pool.submit(self._run_task, name, values, run)] = name
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    try:
                        run.tasks[name] = future.result()
                    except HarnessError:
                        for other in running:
                            other.cancel()
                        raise
                    self._say(f"{name} done in {run.tasks[name].seconds:.0f}s", run, len(needs))
        run.seconds = time.perf_counter() - started
        return run

    def _say(self, text: str, run: HarnessRun, total: int) -> None:
        if self.progress:
            self.progress(f"[kfp harness {len(run.tasks)}/{total} done] {text}")

    # -- driver ----------------------------------------------------------------------------------
    def executor_input(
        self, name: str, run_parameters: dict[str, Any], run: HarnessRun
    ) -> dict[str, Any]:
        """The ExecutorInput the driver and launcher build for task `name`."""
        task = self.spec["root"]["dag"]["tasks"][name]
        component = self.spec["components"][task["componentRef"]["name"]]
        task_root = f"{run.root}/{name}/{uuid.uuid4()}"
        outputs = {
            key: {
                "artifacts": [
                    {"name": key, "type": definition["artifactType"], "uri": f"{task_root}/{key}"}
                ]
            }  # fmt: skip
            for key, definition in component.get("outputDefinitions", {})
            .get("artifacts", {})
            .items()
        }
        if self.publish_logs:
            logs_key = "executor-logs-0"  # 2.17: -<KFP_RETRY_INDEX>, 0 on a first try
            outputs[logs_key] = {
                "artifacts": [
                    {
                        "name": logs_key,
                        "type": {"schemaTitle": "system.Artifact"},
                        "uri": f"{task_root}/{logs_key}",
                    }  # fmt: skip
                ]
            }
        return {
            "inputs": {
                "parameterValues": self._parameters(name, task, component, run_parameters),
                "artifacts": self._input_artifacts(name, task, run),
            },
            "outputs": {
                "artifacts": outputs,
                "outputFile": f"{local_path_for_uri(task_root)}/output_metadata.json",
            },
        }

    def _parameters(
        self, name: str, task: dict, component: dict, run_parameters: dict[str, Any]
    ) -> dict[str, Any]:
        definitions = component.get("inputDefinitions", {}).get("parameters", {})
        values = {}
        for key, source in task.get("inputs", {}).get("parameters", {}).items():
            if "componentInputParameter" in source:
                value = run_parameters[source["componentInputParameter"]]
            elif "runtimeValue" in source and "constant" in source["runtimeValue"]:
                value = source["runtimeValue"]["constant"]
            else:
                raise HarnessError(f"{name}.{key}: parameter source {sorted(source)} not supported")
            if value is None:
                continue
            kind = definitions.get(key, {}).get("parameterType", "STRING")
            values[key] = coerce_parameter(f"{name}.{key}", value, kind)
        for key, definition in definitions.items():  # the launcher's addDefaultParams
            if key not in values and "defaultValue" in definition:
                values[key] = definition["defaultValue"]
        return values

    def _input_artifacts(self, name: str, task: dict, run: HarnessRun) -> dict[str, Any]:
        artifacts = {}
        for key, source in task.get("inputs", {}).get("artifacts", {}).items():
            producer = source.get("taskOutputArtifact")
            if producer is None:
                raise HarnessError(f"{name}.{key}: artifact source {sorted(source)} not supported")
            produced = run.tasks[producer["producerTask"]].outputs[producer["outputArtifactKey"]]
            artifacts[key] = {"artifacts": [run.store.runtime_artifact(produced)]}
        return artifacts

    # -- launcher --------------------------------------------------------------------------------
    def _run_task(self, name: str, run_parameters: dict[str, Any], run: HarnessRun) -> TaskResult:
        executor_input = self.executor_input(name, run_parameters, run)
        container = kfp_spec.executor_of(self.spec, name)["container"]
        command = [
            self._substitute(arg, executor_input, name)
            for arg in container.get("command", []) + container.get("args", [])
        ]
        pod = self.work_dir / run.run_id / name
        mounts = {root: pod / scheme for scheme, root in LOCAL_ROOTS.items()}
        for folder in mounts.values():
            folder.mkdir(parents=True, exist_ok=True)
        mounts.update(self._pvc_mounts(name))

        def host_path(uri: str) -> Path:
            local = local_path_for_uri(uri)
            root = "/" + local.split("/")[1]
            return mounts[root] / local[len(root) + 1 :]

        for entry in executor_input["inputs"]["artifacts"].values():
            for artifact in entry["artifacts"]:
                self.object_store.download_prefix(artifact["uri"], host_path(artifact["uri"]))
        if os.geteuid() == 0:  # the pod's emptyDirs belong to its user
            for folder in mounts.values():
                _chown_tree(folder)
        env = {
            **{e["name"]: e["value"] for e in container.get("env", [])},
            **self._secret_env(name),
            "KFP_POD_NAME": f"{run.run_id[:8]}-{name.lower()}",
            "KFP_POD_UID": str(uuid.uuid4()),
        }
        log_path = pod / "task.log"
        started = time.perf_counter()
        code = self.runner(command, env=env, mounts=mounts, log_path=log_path)
        seconds = time.perf_counter() - started
        outputs = executor_input["outputs"]["artifacts"]
        for key in [k for k in outputs if k.startswith("executor-logs")]:
            self.object_store.upload_path(log_path, outputs[key]["artifacts"][0]["uri"])
        if code != 0:
            tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-60:])
            raise HarnessError(f"task {name} exited with {code} (log: {log_path}):\n{tail}")
        reported = self._executor_output(host_path, executor_input)
        recorded = {}
        for key, entry in outputs.items():
            artifact = _merge(entry["artifacts"][0], reported.get(key))
            if not artifact["uri"].startswith(run.root + "/"):
                raise HarnessError(
                    f"task {name}: URI {artifact['uri']} does not have expected bucket prefix "
                    f"{run.root}"
                )
            local = host_path(artifact.get("customPath") or artifact["uri"])
            if not key.startswith("executor-logs") and local.exists():
                self.object_store.upload_path(local, artifact["uri"])
            recorded[key] = run.store.record(key, artifact, self.session_info).id
        return TaskResult(name, seconds, command, executor_input, recorded, log_path)

    def _executor_output(self, host_path, executor_input: dict[str, Any]) -> dict[str, Any]:
        """ExecutorOutput's artifacts; strict: unknown fields fail the task, as protojson does."""
        path = host_path_from_local(executor_input["outputs"]["outputFile"], host_path)
        if not path.exists():
            return {}
        document = json.loads(path.read_text())
        unknown = set(document) - _EXECUTOR_OUTPUT_FIELDS
        if unknown:
            raise HarnessError(f"{path}: unknown ExecutorOutput fields {sorted(unknown)}")
        return {k: v.get("artifacts", []) for k, v in document.get("artifacts", {}).items()}

    def _secret_env(self, name: str) -> dict[str, str]:
        executor = self._platform_executor(kfp_spec.executor_label(self.spec, name))
        env = {}
        for secret in executor.get("secretAsEnv", []):
            values = self.secrets.get(secret["secretName"])
            if values is None:
                raise HarnessError(f"{name}: secret {secret['secretName']!r} not found")
            for pair in secret["keyToEnv"]:
                env[pair["envVar"]] = values[pair["secretKey"]]
        return env

    def _pvc_mounts(self, name: str) -> dict[str, Path]:
        label = kfp_spec.executor_label(self.spec, name)
        mounts = self._platform_executor(label).get("pvcMount", [])
        if mounts:
            raise HarnessError(
                f"{name}: mounts PVC {mounts[0].get('constant')!r}; the harness runs against the "
                "object store only (compile with kubeflow.pvc_name=null)"
            )
        return {}

    def _platform_executor(self, label: str) -> dict[str, Any]:
        platform = (self.platform or {}).get("platforms", {}).get("kubernetes", {})
        return platform.get("deploymentSpec", {}).get("executors", {}).get(label, {})

    @staticmethod
    def _substitute(arg: str, executor_input: dict[str, Any], task: str) -> str:
        def replace(match: re.Match) -> str:
            text = match.group(0)
            if text == "{{$}}":
                return json.dumps(executor_input)
            parameter = re.fullmatch(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}", text)
            if parameter:
                value = executor_input["inputs"]["parameterValues"][parameter.group(1)]
                return value if isinstance(value, str) else _go_text(value)
            uri = re.fullmatch(r"\{\{\$\.outputs\.artifacts\['([^']+)'\]\.uri\}\}", text)
            if uri:
                return executor_input["outputs"]["artifacts"][uri.group(1)]["artifacts"][0]["uri"]
            raise HarnessError(f"{task}: placeholder {text} is not supported by the harness")

        return PLACEHOLDER.sub(replace, arg)


def host_path_from_local(local: str, host_path: Callable[[str], Path]) -> Path:
    """The host folder behind a pod-local /s3/... path."""
    scheme = {v: k for k, v in LOCAL_ROOTS.items()}["/" + local.split("/")[1]]
    return host_path(f"{scheme}://{local.split('/', 2)[2]}")


def _merge(declared: dict[str, Any], reported: list[dict[str, Any]] | None) -> dict[str, Any]:
    """mergeRuntimeArtifacts: only the first reported artifact's uri, metadata and customPath."""
    merged = {**declared, "metadata": dict(declared.get("metadata") or {})}
    if reported:
        first = reported[0]
        if first.get("uri"):
            merged["uri"] = first["uri"]
        merged["metadata"].update(first.get("metadata") or {})
        if first.get("customPath"):
            merged["customPath"] = first["customPath"]
    return merged


def _chown_tree(folder: Path) -> None:
    """Downloads land owned by the pod's user, as the launcher (same uid) writes them."""
    for root, dirs, files in os.walk(folder):
        for entry in dirs + files:
            os.chown(os.path.join(root, entry), 10001, 10001)
    shutil.chown(folder, 10001, 10001)


class ImageRunner:
    """A task's main container as its pod runs it: the image's own USER, WORKDIR and ENV, plus
    the launcher's env; the launcher's emptyDirs (/s3, /gcs, /minio) as host folders; the host
    network, so the only thing it reaches is the loopback object store. One container per task."""

    def __init__(self, image: str, timeout_s: float = 1500):
        self.image, self.timeout_s = image, timeout_s

    def __call__(
        self, command: list[str], *, env: dict[str, str], mounts: dict[str, Path], log_path: Path
    ) -> int:
        import podman

        volumes = [(str(source), target) for target, source in sorted(mounts.items())]
        done = podman.run(
            self.image, command, env=env, user=None, workdir=None, volumes=volumes,
            timeout=self.timeout_s, log_path=log_path,
        )  # fmt: skip
        return done.returncode
