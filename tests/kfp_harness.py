"""A local stand-in for the KFP v2 backend: executes a compiled pipeline package on this machine.

It exists to catch a compiled pipeline that would fail on a cluster, without a cluster. For each
task of the root DAG, in dependency order, it does what KFP's driver and launcher do for a
container task, and nothing more:
- resolves the task's parameters (run parameters, constants) and input artifacts (the producing
  task's output artifacts, with the metadata that task's executor reported);
- allocates output artifact URIs under the pipeline root (<root>/<run id>/<task>/<output>);
- builds the ExecutorInput JSON, substitutes the `{{$}}` placeholder (and the simple
  `{{$.inputs.parameters[...]}}` / `{{$.outputs.artifacts[...].uri}}` ones) in the executor's
  command and args, and runs exactly that command line in a subprocess with the image's
  environment variables;
- reads the ExecutorOutput file the executor wrote and records its output artifacts for the
  downstream tasks.
It refuses, before running anything, every feature the open-source KFP backend would not run
(pipelines.kfp_spec.unsupported_features: resolver nodes, lifecycle hooks, ...), and every
placeholder or input kind it does not implement, so it never pretends.

What it does not emulate: images (the command runs with this machine's Python, i.e. the same lock
the image installs), Kubernetes resources and volume mounts (paths are used as they are), caching,
retries and ML Metadata. It uses no kfp internals: only the spec's documented structure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines import kfp_spec

PLACEHOLDER = re.compile(r"\{\{\$[^}]*\}\}")


class HarnessError(RuntimeError):
    """A task failed or the spec uses something the harness (or open-source KFP) cannot run."""


@dataclass
class TaskResult:
    name: str
    seconds: float
    command: list[str]
    outputs: dict[str, list[dict[str, Any]]]
    parameters: dict[str, Any]


@dataclass
class HarnessRun:
    run_id: str
    root: str
    tasks: dict[str, TaskResult] = field(default_factory=dict)

    def artifact_uri(self, task: str, output: str) -> str:
        return self.tasks[task].outputs[output][0]["uri"]


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
    """Tasks so that each comes after its dependentTasks and its artifact producers."""
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


def resolve_parameters(
    spec: kfp_spec.PipelineSpec, overrides: dict[str, Any] | None
) -> dict[str, Any]:
    """Run parameters: the spec's defaults, then the run's values; unknown names are errors."""
    definitions = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    unknown = set(overrides or {}) - set(definitions)
    if unknown:
        raise HarnessError(
            f"unknown run parameters {sorted(unknown)}; known: {sorted(definitions)}"
        )
    values = {}
    for name, definition in definitions.items():
        if overrides and name in overrides:
            values[name] = overrides[name]
        elif "defaultValue" in definition:
            values[name] = definition["defaultValue"]
        elif not definition.get("isOptional"):
            raise HarnessError(f"run parameter {name!r} has no default and no value")
    return values


class LocalKfpHarness:
    def __init__(
        self,
        package_path: str | Path,
        *,
        pipeline_root: str | None = None,
        env: dict[str, str] | None = None,
        python_bin_dir: str | None = None,
        log_dir: str | Path | None = None,
        progress: bool = True,
    ):
        self.spec, self.platform = kfp_spec.read_package(package_path)
        problems = kfp_spec.unsupported_features(self.spec)
        if problems:
            raise HarnessError(
                "refusing to run: open-source KFP v2 would not run this spec:\n  "
                + "\n  ".join(problems)
            )
        self.pipeline_root = pipeline_root or self.spec.get("defaultPipelineRoot")
        if not self.pipeline_root:
            raise HarnessError("no pipeline root: the spec has no defaultPipelineRoot")
        self.env = env or {}
        # `python` in the spec's command must be this environment's Python (the image's stand-in).
        self.python_bin_dir = python_bin_dir or os.path.dirname(sys.executable)
        self.log_dir = Path(log_dir) if log_dir else None
        self.progress = progress

    def run(self, parameters: dict[str, Any] | None = None, parallelism: int = 2) -> HarnessRun:
        """Runs every task once its upstream tasks succeeded, up to `parallelism` at a time (KFP
        runs independent tasks concurrently too); the first failure stops the run."""
        values = resolve_parameters(self.spec, parameters)
        run = HarnessRun(run_id=f"run-{uuid.uuid4().hex[:8]}", root=self.pipeline_root)
        needs = upstream_tasks(self.spec)
        pending = set(topological_order(self.spec))
        running: dict[Future, str] = {}
        with ThreadPoolExecutor(max_workers=parallelism) as pool:
            while pending or running:
                ready = sorted(n for n in pending if needs[n] <= set(run.tasks))
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
        return run

    def _say(self, text: str, run: HarnessRun, total: int) -> None:
        if self.progress:
            print(f"[harness {len(run.tasks)}/{total} done] {text}", flush=True)

    def _run_task(self, name: str, run_parameters: dict[str, Any], run: HarnessRun) -> TaskResult:
        task = self.spec["root"]["dag"]["tasks"][name]
        component = self.spec["components"][task["componentRef"]["name"]]
        container = kfp_spec.executor_of(self.spec, name)["container"]
        parameters = self._task_parameters(name, task, run_parameters)
        inputs = self._task_input_artifacts(name, task, run)
        work = Path(run.root) / run.run_id / name
        output_file = work / "executor_output.json"
        outputs = {
            output: [
                {
                    "name": f"{run.run_id}/{name}/{output}",
                    "type": definition["artifactType"],
                    "uri": str(work / output),
                    "metadata": {},
                }
            ]
            for output, definition in component.get("outputDefinitions", {})
            .get("artifacts", {})
            .items()
        }
        executor_input = {
            "inputs": {"parameterValues": parameters, "artifacts": inputs},
            "outputs": {
                "artifacts": {key: {"artifacts": value} for key, value in outputs.items()},
                "outputFile": str(output_file),
            },
        }
        command = [
            self._substitute(arg, executor_input, name)
            for arg in container.get("command", []) + container.get("args", [])
        ]
        work.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **self.env,
            "PATH": f"{self.python_bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        started = time.perf_counter()
        log_path = (self.log_dir or work) / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        seconds = time.perf_counter() - started
        if completed.returncode != 0:
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
            raise HarnessError(
                f"task {name} exited with {completed.returncode} (log: {log_path}):\n{tail}"
            )
        if output_file.exists():
            reported = json.loads(output_file.read_text()).get("artifacts", {})
            for key, value in reported.items():
                if key in outputs and value.get("artifacts"):
                    outputs[key] = [
                        {**declared, **{k: v for k, v in got.items() if k != "name"}}
                        for declared, got in zip(outputs[key], value["artifacts"], strict=True)
                    ]
        return TaskResult(name, seconds, command, outputs, parameters)

    def _task_parameters(
        self, name: str, task: dict[str, Any], run_parameters: dict[str, Any]
    ) -> dict[str, Any]:
        values = {}
        for key, source in task.get("inputs", {}).get("parameters", {}).items():
            if "componentInputParameter" in source:
                values[key] = run_parameters[source["componentInputParameter"]]
            elif "runtimeValue" in source and "constant" in source["runtimeValue"]:
                values[key] = source["runtimeValue"]["constant"]
            else:
                raise HarnessError(f"{name}.{key}: parameter source {sorted(source)} not supported")
        return values

    def _task_input_artifacts(
        self, name: str, task: dict[str, Any], run: HarnessRun
    ) -> dict[str, Any]:
        artifacts = {}
        for key, source in task.get("inputs", {}).get("artifacts", {}).items():
            producer = source.get("taskOutputArtifact")
            if producer is None:
                raise HarnessError(f"{name}.{key}: artifact source {sorted(source)} not supported")
            produced = run.tasks[producer["producerTask"]].outputs[producer["outputArtifactKey"]]
            artifacts[key] = {"artifacts": produced}
        return artifacts

    @staticmethod
    def _substitute(arg: str, executor_input: dict[str, Any], task: str) -> str:
        def replace(match: re.Match) -> str:
            text = match.group(0)
            if text == "{{$}}":
                return json.dumps(executor_input)
            parameter = re.fullmatch(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}", text)
            if parameter:
                value = executor_input["inputs"]["parameterValues"][parameter.group(1)]
                return value if isinstance(value, str) else json.dumps(value)
            uri = re.fullmatch(r"\{\{\$\.outputs\.artifacts\['([^']+)'\]\.uri\}\}", text)
            if uri:
                return executor_input["outputs"]["artifacts"][uri.group(1)]["artifacts"][0]["uri"]
            raise HarnessError(f"{task}: placeholder {text} is not supported by the harness")

        return PLACEHOLDER.sub(replace, arg)


def image_environment(dockerfile: str | Path) -> dict[str, str]:
    """The ENV KEY=VALUE settings of a Dockerfile, so commands run with the image's environment."""
    env = {}
    for line in Path(dockerfile).read_text().splitlines():
        if line.strip().startswith("ENV "):
            for pair in line.strip()[4:].split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env
