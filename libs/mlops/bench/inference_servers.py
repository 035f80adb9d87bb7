"""Baseline servers of ``./scripts/bench inference``, each run as its own process:

- ``noop``: a V2 gRPC server on the same stack as the service (grpc.aio and tritonclient's generated
  stubs) that decodes the request and answers zeros without touching a model: the transport ceiling;
- ``naive``: the per-request server a team writes first, FastAPI + torch, one forward pass per request,
  V2 JSON over REST (a sync endpoint, so FastAPI runs it in its thread pool);
- ``raw``: the compute ceiling, the model's forward pass in a tight loop on numpy batches of a given size
  (frozen and ``optimize_for_inference``-d, as the service serves it), printing rows/s as JSON;
- ``mlp``: writes the benchmark model (an MLP 32 -> 256 -> 256 -> 2, TorchScript) to a file.

``python -m mlops.bench.inference_servers noop --port P`` / ``naive --port P --model FILE`` /
``raw --model FILE --rows N --seconds S`` / ``mlp --out FILE``. Every server and the raw loop use one
torch thread: on the benchmark's 2-core machine the load generator has the other core.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

FEATURES, HIDDEN, OUTPUTS = 32, 256, 2


def build_mlp(path: Path, seed: int = 0) -> Path:
    """The benchmark model as TorchScript: Linear(32, 256), ReLU, Linear(256, 256), ReLU, Linear(256, 2), softmax."""
    import torch

    class Mlp(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Linear(FEATURES, HIDDEN),
                torch.nn.ReLU(),
                torch.nn.Linear(HIDDEN, HIDDEN),
                torch.nn.ReLU(),
                torch.nn.Linear(HIDDEN, OUTPUTS),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.body(x), dim=1)

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(Mlp().eval()), str(path))
    return path


# -- the no-op V2 gRPC server ----------------------------------------------------------------------------
async def serve_noop(port: int) -> None:
    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    Out = service_pb2.ModelInferResponse.InferOutputTensor

    class Noop(service_pb2_grpc.GRPCInferenceServiceServicer):
        async def ServerLive(self, request: Any, context: Any) -> Any:
            return service_pb2.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return service_pb2.ServerReadyResponse(ready=True)

        async def ModelReady(self, request: Any, context: Any) -> Any:
            return service_pb2.ModelReadyResponse(ready=True)

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            # Decode the input as a server must (shape, raw bytes), then answer zeros of the output's shape.
            item = request.inputs[0]
            x = np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(tuple(item.shape))
            zeros = np.zeros((x.shape[0], OUTPUTS), dtype="<f4")
            return service_pb2.ModelInferResponse(
                model_name=request.model_name,
                model_version="1",
                outputs=[Out(name="output", datatype="FP32", shape=[x.shape[0], OUTPUTS])],
                raw_output_contents=[zeros.tobytes()],
            )

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                      ("grpc.max_send_message_length", 64 << 20)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Noop(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# -- the naive FastAPI + torch server --------------------------------------------------------------------
class NaiveInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class NaiveRequest(BaseModel):
    inputs: list[NaiveInput]


def naive_app(model_path: Path) -> Any:
    import torch
    from fastapi import FastAPI

    torch.set_num_threads(1)
    model = torch.jit.load(str(model_path))
    model.eval()
    app = FastAPI()

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/models/{name}/infer")
    def infer(name: str, request: NaiveRequest) -> dict[str, Any]:
        item = request.inputs[0]
        x = torch.tensor(item.data, dtype=torch.float32).reshape(item.shape)
        with torch.no_grad():
            y = model(x)
        return {"model_name": name, "outputs": [
            {"name": "output", "datatype": "FP32", "shape": list(y.shape), "data": y.reshape(-1).tolist()}]}

    return app


def serve_naive(port: int, model_path: Path) -> None:
    import uvicorn

    uvicorn.run(naive_app(model_path), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the raw forward pass --------------------------------------------------------------------------------
def raw_forward(model_path: Path, rows: int, seconds: float, optimize: bool = True) -> dict[str, float]:
    """Rows per second of the model's forward pass on ``[rows, 32]`` float32 numpy batches, numpy out."""
    import time

    import numpy as np
    import torch

    torch.set_num_threads(1)
    model = torch.jit.load(str(model_path))
    model.eval()
    if optimize:
        model = torch.jit.optimize_for_inference(torch.jit.freeze(model))
    x = np.random.default_rng(0).standard_normal((rows, FEATURES)).astype(np.float32)

    def forward() -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    for _ in range(200):
        forward()
    n = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            forward()
        n += 50
    return {"rows": rows, "batches_per_s": n / elapsed, "rows_per_s": n * rows / elapsed,
            "us_per_batch": elapsed / n * 1e6}


def _run_loop(coro: Any) -> None:
    """The event loop the service runs on (uvloop when installed), so the no-op server shares its stack."""
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inference_servers", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    noop = sub.add_parser("noop")
    noop.add_argument("--port", type=int, required=True)
    naive = sub.add_parser("naive")
    naive.add_argument("--port", type=int, required=True)
    naive.add_argument("--model", type=Path, required=True)
    raw = sub.add_parser("raw")
    raw.add_argument("--model", type=Path, required=True)
    raw.add_argument("--rows", type=int, default=64)
    raw.add_argument("--seconds", type=float, default=3.0)
    raw.add_argument("--no-optimize", action="store_true")
    mlp = sub.add_parser("mlp")
    mlp.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.kind == "noop":
        _run_loop(serve_noop(args.port))
    elif args.kind == "naive":
        serve_naive(args.port, args.model)
    elif args.kind == "raw":
        import json

        print(json.dumps(raw_forward(args.model, args.rows, args.seconds, optimize=not args.no_optimize)))
    else:
        build_mlp(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
