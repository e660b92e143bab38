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
        node = NodeRun(node_id=node_id, state=state)
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
