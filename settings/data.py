"""The data sections: where the shop's spans are (data), the Beam runner of the data stages
(beam) and the S3 API that s3:// URIs resolve to (object_store)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from settings.section import Section


class DataConfig(Section):
    """Where the shop's spans are and which one to train on."""

    root: str = "data/shop"
    span: int | None = Field(None, ge=1, description="span to train on; None = the newest span-N")
    file_pattern: str = "span-{SPAN}/*.csv"
    train_buckets: int = Field(4, ge=1, description="hash split: train share = train/(train+eval)")
    eval_buckets: int = Field(1, ge=1)
    csv_reader: Literal["arrow", "tfx"] = Field(
        "arrow",
        description="ExampleGen's CSV reader: arrow = columnar parse + C++ tf.Example encoder "
        "(components/arrow_csv.py); tfx = TFX's CsvExampleGen executor, cell by cell in Python",
    )


class BeamConfig(Section):
    """Beam runner for the data stages (ExampleGen, StatisticsGen, Transform, Evaluator)."""

    runner: Literal["DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner"] = "DirectRunner"
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = "in_memory"
    direct_num_workers: int = Field(1, ge=0, description="0 = one worker per core")
    extra_args: list[str] = Field(default_factory=list, description="passed to Beam as they are")

    def pipeline_args(self) -> list[str]:
        args = [f"--runner={self.runner}"]
        if self.runner == "DirectRunner":
            args += [
                f"--direct_running_mode={self.direct_running_mode}",
                f"--direct_num_workers={self.direct_num_workers}",
            ]
        return args + list(self.extra_args)


class ObjectStoreConfig(Section):
    """The S3 API that s3:// URIs (pipeline root, data, pushed models) resolve to: KFP's MinIO, or
    AWS S3 when `endpoint` is None. gs:// needs nothing here (TensorFlow and Beam reach GCS
    themselves). Credentials never live in the config: on Kubeflow they come from a Secret."""

    endpoint: str | None = Field(
        None, description="http(s)://host:port of an S3 API server; None = AWS S3"
    )
    region: str = "us-east-1"
    credentials_secret: str | None = Field(
        "mlpipeline-minio-artifact",
        description="Kubernetes Secret every step reads its keys from (KFP's own MinIO secret)",
    )
    access_key_field: str = Field("accesskey", description="the Secret's key of the access key")
    secret_key_field: str = Field("secretkey", description="the Secret's key of the secret key")

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_a_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^/\s]+/?", value):
            raise ValueError(f"{value!r}: expected http://host:port or https://host:port")
        return value.rstrip("/") if value else value

    def environment(self) -> dict[str, str]:
        """Settings tensorflow-io's and boto3's S3 clients read (not the keys)."""
        env = {"AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region}
        if self.endpoint:
            secure = self.endpoint.startswith("https://")
            env.update(
                S3_ENDPOINT=self.endpoint,  # tensorflow-io: the scheme says http or https
                S3_USE_HTTPS="1" if secure else "0",
                S3_VERIFY_SSL="1" if secure else "0",
                AWS_ENDPOINT_URL_S3=self.endpoint,  # boto3 >= 1.28
            )
        return env

    def key_variables(self) -> dict[str, str]:
        """Environment variable -> the Secret's key that fills it (the S3 clients' key pair)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_field,
            "AWS_SECRET_ACCESS_KEY": self.secret_key_field,
        }

    def beam_args(self) -> list[str]:
        """Beam's S3 filesystem options (apache-beam[aws]); keys from the environment."""
        args = [f"--s3_region_name={self.region}"]
        if self.endpoint:
            args.append(f"--s3_endpoint_url={self.endpoint}")
            if self.endpoint.startswith("http://"):
                args.append("--s3_disable_ssl")
        return args
