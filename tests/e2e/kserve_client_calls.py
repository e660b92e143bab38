"""Calls the model server with kserve's own InferenceRESTClient (kserve 0.15.2), as a KServe
user's code would: V1 rows, V2 with JSON tensor data (no content type, no binary header) and V2
with binary tensor data. Runs in the serving environment (kserve is not in the pipeline's lock);
tests/e2e/test_serving_hardening.py starts it and compares the scores.

    python tests/e2e/kserve_client_calls.py <base url> <model name> <rows.json> <contract.json>
Prints one JSON object: {"v1": [...], "v2_json": [...], "v2_binary": [...]}.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

NUMPY = {"string": np.object_, "int": np.int64, "float": np.float32}
DATATYPE = {"string": "BYTES", "int": "INT64", "float": "FP32"}


def v2_request(model: str, rows: list[dict], features: dict, binary: bool) -> InferRequest:
    inputs = []
    for name, spec in sorted(features.items()):
        values = [row[name] for row in rows]
        tensor = InferInput(name, [len(rows)], DATATYPE[spec["type"]])
        if binary:
            array = np.array(
                [v.encode() for v in values] if spec["type"] == "string" else values,
                dtype=NUMPY[spec["type"]],
            )
            tensor.set_data_from_numpy(array, binary_data=True)
        else:
            tensor.set_data_from_numpy(np.array(values, dtype=NUMPY[spec["type"]]), False)
        inputs.append(tensor)
    return InferRequest(model_name=model, infer_inputs=inputs, request_id="kserve-client")


async def main(url: str, model: str, rows: list[dict], contract: dict) -> dict:
    features = contract["features"]
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", timeout=60))
    v2 = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    try:
        answer = await v1.infer(url, {"instances": rows}, model_name=model)
        out: dict = {"v1": answer["predictions"]}
        for mode, binary in (("v2_json", False), ("v2_binary", True)):
            response = await v2.infer(url, v2_request(model, rows, features, binary), model)
            out[mode] = response.outputs[0].as_numpy().reshape(-1).tolist()
        return out
    finally:
        await v1.close()
        await v2.close()


if __name__ == "__main__":
    base, name, rows_path, contract_path = sys.argv[1:5]
    with open(rows_path) as f, open(contract_path) as g:
        result = asyncio.run(main(base, name, json.load(f), json.load(g)))
    print(json.dumps(result))
