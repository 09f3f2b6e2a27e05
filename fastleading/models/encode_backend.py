"""What runs the LM in no-gradient encodes whose weights stay fixed while they run: eager
PyTorch, or an inference engine on the CPU, OpenVINO or ONNX Runtime (``train.encode_backend``).

The bank fill, evaluation, ``predict``, ``export`` and ``downstream``'s features encode many
nodes with weights that do not change during the encode. On a CPU the engines run the same
fp32 model faster than eager PyTorch, most on short texts (measured side by side in
benchmarks/results/cpu-encode-2026-12-07.json: MiniLM on real arXiv titles and CiteSeer-TAG
texts, embeddings within min cosine 0.999 of eager fp32's). The model is exported to ONNX once
per set of weights (:func:`fixed_weights` exports again when the weights changed, as after an
optimizer step or ``load_state_dict``) and the engine is kept for the next encode with the
same weights. Pipeline 2's bank refresh runs between optimizer steps, so its weights change
every step: it stays eager (an export per step would cost more than it saves).

- ``eager``: the encoder itself (today's path; under the run's autocast).
- ``openvino``: :class:`OpenVinoEncoder`; ``onnx``: :class:`OnnxEncoder` (both fp32 whatever
  ``train.precision`` says, on the CPU of a single-process run only; extras ``openvino`` /
  ``onnx``).
- ``auto``: for fp32 runs (``train.precision`` fp32, or ``auto`` on a CPU without native bf16)
  OpenVINO, else ONNX Runtime, where they can run and are installed; else ``eager``, said once
  on stderr when neither is installed.
"""

from __future__ import annotations

import importlib.util
import tempfile
import warnings
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fastleading.errors import FastleadingError

if TYPE_CHECKING:
    from fastleading.engine.precision import Precision
    from fastleading.models.lm import LMEncoder

BACKENDS = ("auto", "eager", "onnx", "openvino")
ONNX_OPSET = 17
# what each engine needs installed (the exporter writes the ONNX protobuf with the onnx package)
PACKAGES = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx")}
EXTRAS = {"onnx": "onnx", "openvino": "openvino"}
_announced: set[str] = set()
# encoder -> {engine: (fingerprint, FixedEncoder)}: a weak map, so that the sessions go with the
# encoder and nothing unpicklable is put on the module itself (the trainer deep-copies models)
_sessions: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def available(backend: str) -> bool:
    """Whether the packages of ``backend`` (onnx: ONNX Runtime; openvino: OpenVINO) import."""
    return all(importlib.util.find_spec(name) is not None for name in PACKAGES[backend])


def onnx_available() -> bool:
    return available("onnx")


def openvino_available() -> bool:
    return available("openvino")


def _announce(message: str) -> None:
    from fastleading.run.console import notice

    if message not in _announced:
        _announced.add(message)
        notice(message)


def resolve_backend(requested: str, device: torch.device, encoder: nn.Module | None = None,
                    precision: Precision | None = None) -> str:
    """``eager``, ``openvino`` or ``onnx`` for ``train.encode_backend=requested`` on ``device``.

    ``auto`` keeps eager under bf16 autocast (``precision``): the engines run fp32, and on a
    CPU with native bf16 eager bf16 is what ``train.precision=auto`` chose for speed there.
    Else ``auto`` takes OpenVINO when installed, then ONNX Runtime (the order of their speed in
    benchmarks/results/cpu-encode-2026-12-07.json), else eager and says so once.

    An engine asked where it cannot run (a GPU, several processes, an encoder that is not a
    plain :class:`fastleading.models.lm.LMEncoder`, e.g. a DeepSpeed engine) or without its packages
    is one line naming the field; ``auto`` falls back to ``eager`` there."""
    from fastleading.engine.distributed import get_world_size
    from fastleading.models.lm import LMEncoder

    if requested not in BACKENDS:
        raise FastleadingError(f"config key 'train.encode_backend': expected one of {', '.join(BACKENDS)}, "
                               f"got {requested!r}")
    if requested == "eager" or (requested == "auto" and precision is not None
                                and precision.autocast_dtype is not None):
        return "eager"
    where = None
    if device.type != "cpu":
        where = f"the run is on {device.type}"
    elif get_world_size() > 1:
        where = f"the run has {get_world_size()} processes"
    elif encoder is not None and not isinstance(encoder, LMEncoder):
        where = f"the encoder is a {type(encoder).__name__}, not a plain LMEncoder"
    if where is not None:
        if requested != "auto":
            raise FastleadingError(f"config key 'train.encode_backend': {requested} runs on the CPU of a "
                                   f"single-process run with a plain LM ({where}); use auto or eager")
        return "eager"
    if requested != "auto":
        if not available(requested):
            raise FastleadingError(f"config key 'train.encode_backend': {requested} needs the packages "
                                   f"{' and '.join(PACKAGES[requested])}, which are not all installed "
                                   f"(pip install 'fastleading[{EXTRAS[requested]}]'), or use eager")
        return requested
    for backend in ("openvino", "onnx"):
        if available(backend):
            return backend
    _announce("train.encode_backend=auto: neither openvino nor onnxruntime is installed, so no-gradient encodes "
              "on the CPU run in eager PyTorch (pip install 'fastleading[openvino]' for the faster path)")
    return "eager"


def export_onnx(encoder: nn.Module, path: Path) -> None:
    """Write ``encoder`` (fp32, eval mode) as ONNX to ``path``: inputs ``input_ids`` and
    ``attention_mask`` (int64 ``[batch, length]``), output ``embedding`` (``[batch, hidden]``).
    Traced with padded example rows (a row of real tokens only could let the trace drop the mask)."""

    class Wrapped(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids, attention_mask)

    was_training = encoder.training
    encoder.eval()
    # two rows of 8 tokens, the second half padding on the side this model pads
    ids = torch.full((2, 8), 101, dtype=torch.long)
    mask = torch.ones(2, 8, dtype=torch.long)
    if getattr(encoder, "is_decoder", False):
        mask[1, :4] = 0
    else:
        mask[1, 4:] = 0
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(Wrapped(encoder), (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                              output_names=["embedding"], opset_version=ONNX_OPSET, dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "length"},
                                            "attention_mask": {0: "batch", 1: "length"}})
    finally:
        encoder.train(was_training)


class FixedEncoder(nn.Module):
    """An inference engine's copy of an :class:`fastleading.models.lm.LMEncoder` with fixed (fp32)
    weights: ``forward(input_ids [B, L], attention_mask [B, L]) -> [B, hidden]`` fp32 on the
    CPU, as the encoder's. Has no parameters; ``runs`` counts its forwards; ``backend`` names
    the engine."""

    backend = ""
    # token positions per forward at most: in a quick sweep on this project's 2-core CPU (MiniLM,
    # 32 and 128 tokens; not kept as a result file) ONNX Runtime ran faster on micro-batches
    # of 512-2048 positions, whose activations stay in cache, than on 16384-position ones,
    # where eager PyTorch prefers large ones; callers take the smaller of this and
    # train.encode_token_budget
    token_budget = 2048

    def __init__(self, engine: Any, hidden_size: int):
        super().__init__()
        self.engine, self.hidden_size, self.runs = engine, hidden_size, 0

    @staticmethod
    def open(path: Path) -> Any:
        """The engine's model of the ONNX file ``path``, ready to run."""
        raise NotImplementedError

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """float32 ``[B, hidden]`` of int64 ``input_ids`` and ``attention_mask [B, L]``."""
        raise NotImplementedError

    @classmethod
    def export(cls, encoder: LMEncoder) -> FixedEncoder:
        """Export ``encoder`` and open it with as many threads as PyTorch uses."""
        with tempfile.TemporaryDirectory(prefix="fastleading-onnx-") as tmp:
            path = Path(tmp) / "encoder.onnx"
            export_onnx(encoder, path)
            return cls(cls.open(path), encoder.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.runs += 1
        return torch.from_numpy(self.run(input_ids.to(torch.long).numpy(), attention_mask.to(torch.long).numpy()))


class OnnxEncoder(FixedEncoder):
    """:class:`FixedEncoder` on an ONNX Runtime session (CPU provider, all graph optimisations)."""

    backend = "onnx"

    @staticmethod
    def open(path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.engine.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]


class OpenVinoEncoder(FixedEncoder):
    """:class:`FixedEncoder` on OpenVINO's CPU plugin, in fp32 (``INFERENCE_PRECISION_HINT=f32``:
    its default is bf16 on CPUs with native bf16, which would not be fp32's embeddings)."""

    backend = "openvino"

    def __init__(self, compiled: Any, hidden_size: int):
        super().__init__(compiled, hidden_size)
        self.request = compiled.create_infer_request()

    @staticmethod
    def open(path: Path):
        import openvino as ov

        core = ov.Core()
        return core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY"})

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        out = self.request.infer({"input_ids": input_ids, "attention_mask": attention_mask})
        return out[0].copy()  # the request reuses its output buffer


ENGINES = {"onnx": OnnxEncoder, "openvino": OpenVinoEncoder}


def _fingerprint(encoder: nn.Module) -> tuple:
    """Changes when the weights change, and when PyTorch's thread count does (the session's
    threads are set when it opens). The weights are read, not their version counters: the
    fused AdamW updates parameters in place without bumping ``_version``. Per tensor its sum
    and L2 norm in float64 (two reductions over the weights: milliseconds for MiniLM, far
    below the export they save)."""
    with torch.no_grad():
        stats = [torch.stack([t.sum(dtype=torch.float64), torch.linalg.vector_norm(t, dtype=torch.float64)])
                 for t in (*encoder.parameters(), *encoder.buffers()) if t.is_floating_point()]
        values = torch.stack(stats).flatten().tolist() if stats else []
    return torch.get_num_threads(), tuple(t.data_ptr() for t in encoder.parameters()), tuple(values)


def fixed_weights(encoder: LMEncoder, backend: str, device: torch.device,
                  precision: Precision | None = None) -> nn.Module:
    """The module that runs ``encoder``'s no-gradient encodes under ``train.encode_backend=backend``:
    the encoder itself (eager) or its :class:`FixedEncoder`, exported again only when the
    weights (or the thread count) changed since that engine's last export."""
    engine = resolve_backend(backend, device, encoder, precision)
    if engine == "eager":
        return encoder
    engines = _sessions.setdefault(encoder, {})
    if engines.get(f"{engine} failed"):
        return encoder
    key = _fingerprint(encoder)
    cached = engines.get(engine)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        fixed = ENGINES[engine].export(encoder)
    except Exception as e:  # noqa: BLE001 - whatever the exporter or the engine raise: one line
        why = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        if backend != "auto":
            raise FastleadingError(f"config key 'train.encode_backend': {engine} could not take this LM "
                                   f"({why}); use auto or eager") from None
        # auto: this LM stays eager from now on (an export that failed once fails again)
        engines[f"{engine} failed"] = True
        _announce(f"train.encode_backend=auto: {engine} could not take this LM ({why}); its no-gradient "
                  "encodes run in eager PyTorch")
        return encoder
    engines[engine] = (key, fixed)
    return fixed


def cached_session(encoder: nn.Module, backend: str) -> FixedEncoder | None:
    """The :class:`FixedEncoder` of engine ``backend`` (onnx, openvino) last exported for
    ``encoder`` (None if none was)."""
    cached = _sessions.get(encoder, {}).get(backend)
    return None if cached is None else cached[1]
