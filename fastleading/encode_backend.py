"""What runs the LM in no-gradient encodes whose weights stay fixed while they run: eager
PyTorch, or ONNX Runtime on the CPU (``train.encode_backend``).

The bank fill, evaluation, ``predict``, ``export`` and ``downstream``'s features encode many
nodes with weights that do not change during the encode. On a CPU, ONNX Runtime runs the same
fp32 model much faster than eager PyTorch (benchmarks/results/cpu-encode-2026-12-07.json:
MiniLM on real arXiv titles and CiteSeer-TAG texts, min cosine to eager fp32 >= 0.999); the
model is exported once per set of weights (:func:`fixed_weights` re-exports when the weights
changed, as after an optimizer step or ``load_state_dict``) and the session is kept
for the next encode with the same weights. Pipeline 2's bank refresh runs between optimizer
steps, so its weights change every step: it stays eager (an export per step would cost more
than it saves).

- ``eager``: the encoder itself (today's path; under the run's autocast).
- ``onnx``: :class:`OnnxEncoder` (fp32, whatever ``train.precision`` says; needs the
  ``onnx`` extra: ``onnxruntime`` and ``onnx``), on the CPU of a single-process run only.
- ``auto``: ``onnx`` for fp32 runs (``train.precision`` fp32, or ``auto`` on a CPU without native
  bf16) where it can run and its packages are installed, else ``eager``, said once on stderr
  when the packages are missing.
"""

from __future__ import annotations

import importlib.util
import tempfile
import warnings
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from fastleading.errors import FastleadingError

if TYPE_CHECKING:
    from fastleading.precision import Precision

BACKENDS = ("auto", "eager", "onnx")
ONNX_OPSET = 17
_announced: set[str] = set()
# encoder -> (weights fingerprint, OnnxEncoder): a weak map, so that the session goes with the
# encoder and nothing unpicklable is put on the module itself (the trainer deep-copies models)
_sessions: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, OnnxEncoder]]" = weakref.WeakKeyDictionary()


def onnx_available() -> bool:
    """Whether ONNX Runtime and the ONNX package (the exporter writes its protobuf) import."""
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def _announce(message: str) -> None:
    from fastleading.console import notice

    if message not in _announced:
        _announced.add(message)
        notice(message)


def resolve_backend(requested: str, device: torch.device, encoder: nn.Module | None = None,
                    precision: "Precision | None" = None) -> str:
    """``eager`` or ``onnx`` for ``train.encode_backend=requested`` on ``device``.

    ``auto`` keeps eager under bf16 autocast (``precision``): ONNX Runtime runs fp32, and on a
    CPU with native bf16 eager bf16 is what ``train.precision=auto`` chose for speed there.

    ``onnx`` asked where it cannot run (a GPU, several processes, an encoder that is not a
    plain :class:`fastleading.lm.LMEncoder`, e.g. a DeepSpeed engine) or without its packages
    is one line naming the field; ``auto`` falls back to ``eager`` there, and says so once
    when only the packages are missing."""
    from fastleading.distributed import get_world_size
    from fastleading.lm import LMEncoder

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
        if requested == "onnx":
            raise FastleadingError(f"config key 'train.encode_backend': onnx runs on the CPU of a single-process "
                                   f"run with a plain LM ({where}); use auto or eager")
        return "eager"
    if not onnx_available():
        if requested == "onnx":
            raise FastleadingError("config key 'train.encode_backend': onnx needs the onnxruntime and onnx packages, "
                                   "which are not installed (pip install 'fastleading[onnx]'), or use eager")
        _announce("train.encode_backend=auto: onnxruntime is not installed, so no-gradient encodes on the CPU run "
                  "in eager PyTorch (pip install 'fastleading[onnx]' for the faster ONNX Runtime path)")
        return "eager"
    return "onnx"


class OnnxEncoder(nn.Module):
    """An ONNX Runtime session of an :class:`fastleading.lm.LMEncoder` with fixed (fp32) weights:
    ``forward(input_ids [B, L], attention_mask [B, L]) -> [B, hidden]`` fp32 on the CPU, as the
    encoder's. Has no parameters; ``runs`` counts its forwards."""

    backend = "onnx"
    # token positions per forward at most: in a quick sweep on this project's 2-core CPU (MiniLM,
    # 32 and 128 tokens; not kept as a result file) ONNX Runtime ran faster on micro-batches
    # of 512-2048 positions, whose activations stay in cache, than on 16384-position ones,
    # where eager PyTorch prefers large ones; callers take the smaller of this and
    # train.encode_token_budget
    token_budget = 2048

    def __init__(self, session, hidden_size: int):
        super().__init__()
        self.session, self.hidden_size, self.runs = session, hidden_size, 0

    @classmethod
    def export(cls, encoder: nn.Module) -> "OnnxEncoder":
        """Export ``encoder`` (fp32, eval mode, traced with padded example rows so that the
        mask's path is the general one) and open it with as many threads as PyTorch uses."""
        import onnxruntime as ort

        class Wrapped(nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask):
                return self.inner(input_ids, attention_mask)

        was_training = encoder.training
        encoder.eval()
        # two rows of 8 tokens, the second half padding on the side this model pads: a row of
        # real tokens only could let the trace drop the mask
        ids = torch.full((2, 8), 101, dtype=torch.long)
        mask = torch.ones(2, 8, dtype=torch.long)
        if getattr(encoder, "is_decoder", False):
            mask[1, :4] = 0
        else:
            mask[1, 4:] = 0
        try:
            with tempfile.TemporaryDirectory(prefix="fastleading-onnx-") as tmp, warnings.catch_warnings(), \
                    torch.no_grad():
                warnings.simplefilter("ignore")
                path = Path(tmp) / "encoder.onnx"
                torch.onnx.export(Wrapped(encoder), (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                                  output_names=["embedding"], opset_version=ONNX_OPSET, dynamo=False,
                                  dynamic_axes={"input_ids": {0: "batch", 1: "length"},
                                                "attention_mask": {0: "batch", 1: "length"}})
                options = ort.SessionOptions()
                options.intra_op_num_threads = torch.get_num_threads()
                options.inter_op_num_threads = 1
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        finally:
            encoder.train(was_training)
        return cls(session, encoder.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.runs += 1
        out = self.session.run(None, {"input_ids": input_ids.to(torch.long).numpy(),
                                      "attention_mask": attention_mask.to(torch.long).numpy()})[0]
        return torch.from_numpy(out)


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


def fixed_weights(encoder: nn.Module, backend: str, device: torch.device,
                  precision: "Precision | None" = None) -> nn.Module:
    """The module that runs ``encoder``'s no-gradient encodes under ``train.encode_backend=backend``:
    the encoder itself (eager) or its :class:`OnnxEncoder`, exported again only when the
    weights changed since the last export."""
    if resolve_backend(backend, device, encoder, precision) == "eager":
        return encoder
    key = _fingerprint(encoder)
    cached = _sessions.get(encoder)
    if cached is not None and cached[0] == key:
        return cached[1]
    onnx = OnnxEncoder.export(encoder)
    _sessions[encoder] = (key, onnx)
    return onnx


def cached_session(encoder: nn.Module) -> OnnxEncoder | None:
    """The :class:`OnnxEncoder` last exported for ``encoder`` (None if none was)."""
    cached = _sessions.get(encoder)
    return None if cached is None else cached[1]
