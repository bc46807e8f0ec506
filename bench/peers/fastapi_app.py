"""The serving bench's FastAPI peer: a LightGBM booster behind FastAPI, one `predict` per request.

    .venv-peers/bin/python bench/peers/fastapi_app.py --model model.txt --port 8000

It answers the Open Inference Protocol's (V2) `POST /v2/models/{name}/infer` with the same body
MLServer takes, so the bench sends both the same bytes. It does less than the service: the
features arrive precomputed, and nothing is enriched, logged or counted. Runs in the peers'
environment (bench/peers/pyproject.toml), not the project's.
"""

from __future__ import annotations

import argparse

import lightgbm as lgb
import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float | None]  # None: missing (NaN), as MLServer's codec decodes it


class InferenceRequest(BaseModel):
    inputs: list[Tensor]


def app_for(model_file: str) -> FastAPI:
    booster = lgb.Booster(model_file=model_file)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/v2/health/ready")
    def ready() -> dict:
        return {}

    @app.post("/v2/models/{name}/infer")
    def infer(name: str, body: InferenceRequest) -> dict:
        tensor = body.inputs[0]
        rows = np.array(tensor.data, dtype=np.float64).reshape(tensor.shape)
        p = booster.predict(rows, num_threads=1)
        return {
            "model_name": name,
            "outputs": [
                {"name": "predict", "shape": [len(p)], "datatype": "FP64", "data": p.tolist()}
            ],
        }

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    uvicorn.run(
        app_for(args.model), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
