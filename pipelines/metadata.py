"""Reads a run's executions and artifacts back from ML Metadata (the local SQLite store)."""

from __future__ import annotations

from dataclasses import dataclass, field

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2


@dataclass
class NodeRun:
    """One component's execution in a pipeline run, with its output artifacts by key."""

    node_id: str
    state: str
    seconds: float = 0.0
    outputs: dict[str, list[metadata_store_pb2.Artifact]] = field(default_factory=dict)


def open_store(metadata_path: str) -> mlmd.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return mlmd.MetadataStore(config)


def latest_run(store: mlmd.MetadataStore, pipeline_name: str) -> dict[str, NodeRun]:
    """Node id -> NodeRun for the newest run of `pipeline_name` (empty if it never ran)."""
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline is None:
        return {}
    runs = [
        c for c in store.get_children_contexts_by_context(pipeline.id) if c.type == "pipeline_run"
    ]
    if not runs:
        return {}
    run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    executions = store.get_executions_by_context(run.id)
    nodes: dict[str, NodeRun] = {}
    node_contexts = {c.id: c.name for c in store.get_contexts_by_type("node")}
    for execution in sorted(executions, key=lambda e: e.id):
        node_name = next(
            (
                node_contexts[c.id]
                for c in store.get_contexts_by_execution(execution.id)
                if c.id in node_contexts
            ),
            None,
        )
        if node_name is None:
            continue
        node_id = (
            node_name.split(".", 1)[1] if node_name.startswith(pipeline_name + ".") else node_name
        )
        state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
        seconds = (
            execution.last_update_time_since_epoch - execution.create_time_since_epoch
        ) / 1000
        node = NodeRun(node_id=node_id, state=state, seconds=seconds)
        events = [
            e
            for e in store.get_events_by_execution_ids([execution.id])
            if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
        ]
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        for event in events:
            key = event.path.steps[0].key if event.path.steps else "output"
            node.outputs.setdefault(key, []).append(artifacts[event.artifact_id])
        nodes[node_id] = node
    return nodes


def custom_property(artifact: metadata_store_pb2.Artifact, name: str):
    """A custom property's value (int, double or string), or None."""
    if name not in artifact.custom_properties:
        return None
    value = artifact.custom_properties[name]
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def upstream_artifacts(
    store: mlmd.MetadataStore, artifact_id: int
) -> list[tuple[str, metadata_store_pb2.Artifact]]:
    """(type name, artifact) for `artifact_id` and everything it was derived from, nearest first."""
    seen: set[int] = set()
    order: list[tuple[str, metadata_store_pb2.Artifact]] = []
    frontier = [artifact_id]
    type_names = {t.id: t.name for t in store.get_artifact_types()}
    while frontier:
        artifacts = [a for a in store.get_artifacts_by_id(frontier) if a.id not in seen]
        seen.update(a.id for a in artifacts)
        order += [(type_names.get(a.type_id, "?"), a) for a in artifacts]
        producing = {
            e.execution_id
            for e in store.get_events_by_artifact_ids([a.id for a in artifacts])
            if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
        }
        inputs = store.get_events_by_execution_ids(list(producing)) if producing else []
        frontier = sorted(
            {
                e.artifact_id
                for e in inputs
                if e.type
                in (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
                and e.artifact_id not in seen
            }
        )
    return order
