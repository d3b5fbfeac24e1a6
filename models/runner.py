"""The try-on inference runner: decode -> preprocess -> one batched model call -> render -> encode.

One runner (one onnxruntime session) per worker process, shared by its threads: ``session.run``
is thread-safe and releases the GIL. onnxruntime is imported only when a runner is constructed,
never at module import, because importing it in a parent that later forks was seen to hang the
child at exit. Build runners in the worker process (Dramatiq's ``after_process_boot``), or use
:func:`shared_runner`, which also refuses to reuse a session across a fork.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from imaging.decode import DEFAULT_MAX_PIXELS, DecodedImage, decode_image
from imaging.encode import ENCODE_MIME, encode_image, make_thumbnail, normalise_format
from models.contract import ModelContractError, ModelManifest, TensorInfo, check_graph, default_opset, load_manifest
from models.pipeline import Placement, prepare_inputs, render_result
from models.registry import resolve_model

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

# Creating sessions is not thread-safe in onnxruntime; running them is.
_SESSION_LOCK = threading.Lock()


class InferenceError(Exception):
    """The model call failed at run time. Transient: the job may be retried."""

    error_type = "inference"
    transient = True


@dataclass(frozen=True)
class TryOnJob:
    """One try-on request: the encoded person and garment photos; ``key`` is the caller's id."""

    person: bytes
    cloth: bytes
    key: Any = None


@dataclass
class StageTimings:
    """Seconds spent per stage for one item; ``inference`` is the whole batch call it was part of."""

    decode: float = 0.0
    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0
    encode: float = 0.0

    @property
    def total(self) -> float:
        """Sum of the stages."""
        return self.decode + self.preprocess + self.inference + self.postprocess + self.encode


@dataclass(frozen=True)
class TryOnResult:
    """A rendered result: encoded image bytes at the person photo's original size."""

    image: bytes
    width: int
    height: int
    format: str
    mime_type: str
    model_version: str
    timings: StageTimings
    key: Any = None
    batch_size: int = 1
    thumbnail: bytes | None = None


@dataclass
class PreparedJob:
    """A decoded, preprocessed item ready for :meth:`TryOnRunner.infer`."""

    person: DecodedImage
    placement: Placement
    tensors: dict[str, npt.NDArray[np.float32]]
    timings: StageTimings = field(default_factory=StageTimings)
    key: Any = None


@dataclass(frozen=True)
class ModelOutput:
    """One item's slice of the model's outputs (CHW), and the batch it ran in."""

    result: npt.NDArray[np.float32]
    alpha: npt.NDArray[np.float32] | None
    seconds: float
    batch_size: int


def available_cores() -> int:
    """CPUs this process may use: affinity mask, capped by a cgroup v2 CPU quota when set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def default_intra_op_threads(processes: int = 1, cores: int | None = None) -> int:
    """Intra-op threads per process so that ``processes`` × threads fits the cores."""
    return max(1, (cores if cores is not None else available_cores()) // max(1, processes))


class TryOnRunner:
    """Runs a contract-checked ONNX try-on model on batches of (person, garment) jobs."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        intra_op_threads: int | None = None,
        inter_op_threads: int = 1,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        allow_spinning: bool = False,
        max_batch: int = 1,
        output_format: str = "jpeg",
        quality: int = 90,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int | None = None,
        processes: int = 1,
        io_threads: int = 1,
        thumbnail_size: int | None = None,
    ) -> None:
        """Load ``model`` (a path or a name under ``models/artefacts``) and check it against its manifest.

        ``intra_op_threads`` defaults to the usable cores divided by ``processes`` (worker processes
        on this host) so processes × threads does not oversubscribe the CPU. Spinning is off unless
        ``allow_spinning``. Providers not installed are skipped with a warning; CPU is the fallback.
        ``io_threads`` > 1 decodes and encodes the items of one ``run_batch`` call in parallel
        (Pillow releases the GIL); useful when the model's threads leave cores idle meanwhile.
        With ``thumbnail_size``, each result also carries a JPEG thumbnail made from the rendered
        image (cheaper than decoding the encoded result again).
        Raises ``ModelContractError`` when the model does not load or does not match its manifest.
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.path = resolve_model(model)
        self.max_batch = max_batch
        self.thumbnail_size = thumbnail_size
        self.output_format = normalise_format(output_format)
        self.quality = quality
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.intra_op_threads = intra_op_threads or default_intra_op_threads(processes)
        self.inter_op_threads = inter_op_threads
        self.allow_spinning = allow_spinning
        self.pid = os.getpid()
        self._session = self._create_session(tuple(providers))
        meta = self._session.get_modelmeta().custom_metadata_map
        self._manifest = load_manifest(self.path, dict(meta))
        check_graph(
            self._manifest,
            [TensorInfo(i.name, i.type, tuple(i.shape)) for i in self._session.get_inputs()],
            [TensorInfo(o.name, o.type, tuple(o.shape)) for o in self._session.get_outputs()],
            model_opset=self._graph_opset,
            max_batch=max_batch,
        )
        out = self._manifest.output
        self._output_names = [out.name] + ([out.alpha] if out.alpha else [])
        cloth_specs = [s for s in self._manifest.inputs if s.effective_role != "person"]
        self._cloth_side = max((max(s.height, s.width) for s in cloth_specs), default=None)
        self.io_threads = max(1, io_threads)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _create_session(self, providers: tuple[str, ...]) -> onnxruntime.InferenceSession:
        import onnx
        import onnxruntime as ort

        try:
            proto = onnx.load(str(self.path), load_external_data=False)
        except Exception as exc:
            raise ModelContractError(f"model file {self.path.name} is not a readable ONNX model: {exc}") from exc
        self._graph_opset = default_opset(proto)
        del proto

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = self.inter_op_threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if not self.allow_spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        installed = set(ort.get_available_providers())
        chosen = [p for p in providers if p in installed]
        for missing in (p for p in providers if p not in installed):
            log.warning("execution provider %s is not installed; skipping it", missing)
        if "CPUExecutionProvider" not in chosen:
            chosen.append("CPUExecutionProvider")
        try:
            with _SESSION_LOCK:
                return ort.InferenceSession(str(self.path), sess_options=opts, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            text = str(exc)
            if "opset" in text.lower():
                raise ModelContractError(
                    f"model {self.path.name} imports opset {self._graph_opset}, which onnxruntime "
                    f"{ort.__version__} cannot run: {text}"
                ) from exc
            raise ModelContractError(f"onnxruntime {ort.__version__} cannot load {self.path.name}: {text}") from exc

    # ----------------------------------------------------------------- properties
    @property
    def manifest(self) -> ModelManifest:
        """The model's manifest (checked against the graph)."""
        return self._manifest

    @property
    def model_version(self) -> str:
        """The manifest version: the value of ``conversion_metrics.ai_model_version``."""
        return self._manifest.version

    @property
    def model_name(self) -> str:
        """The manifest name."""
        return self._manifest.name

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses."""
        return list(self._session.get_providers())

    @property
    def session(self) -> onnxruntime.InferenceSession:
        """The underlying session (for benchmarks that need a bare loop over the same session)."""
        return self._session

    # ----------------------------------------------------------------- stages
    def decode(self, data: bytes, draft_side: int | None = None) -> DecodedImage:
        """Decode one input image with this runner's limits (raises an ``ImageError``)."""
        return decode_image(data, max_pixels=self.max_pixels, max_bytes=self.max_bytes, draft_side=draft_side)

    def prepare(self, job: TryOnJob) -> PreparedJob:
        """Decode and preprocess one job. Raises an ``imaging`` error for bad input."""
        t0 = time.perf_counter()
        person = self.decode(job.person)
        # The garment is only ever seen at the model's size, so a JPEG may decode at a reduced scale.
        cloth = self.decode(job.cloth, self._cloth_side)
        t1 = time.perf_counter()
        tensors, placement = prepare_inputs(self._manifest, person, cloth)
        t2 = time.perf_counter()
        return PreparedJob(person, placement, tensors, StageTimings(decode=t1 - t0, preprocess=t2 - t1), job.key)

    def infer(self, items: Sequence[PreparedJob]) -> list[ModelOutput]:
        """Run the model on ``items`` in calls of at most ``max_batch``; outputs in item order.

        Raises ``InferenceError`` when onnxruntime fails.
        """
        outputs: list[ModelOutput] = []
        step = self.max_batch if self._manifest.dynamic_batch else 1
        for start in range(0, len(items), step):
            chunk = items[start:start + step]
            feeds = {name: np.stack([it.tensors[name] for it in chunk]) for name in chunk[0].tensors}
            t0 = time.perf_counter()
            try:
                results = self._session.run(self._output_names, feeds)
            except Exception as exc:
                raise InferenceError(f"model {self.model_name} failed on a batch of {len(chunk)}: {exc}") from exc
            seconds = time.perf_counter() - t0
            alpha = results[1] if len(results) > 1 else None
            for i, item in enumerate(chunk):
                item.timings.inference = seconds
                outputs.append(ModelOutput(results[0][i], None if alpha is None else alpha[i], seconds, len(chunk)))
        return outputs

    def render(self, item: PreparedJob, output: ModelOutput) -> TryOnResult:
        """Post-process one item back to the person's original size and encode it."""
        t0 = time.perf_counter()
        image = render_result(item.person, item.placement, output.result, output.alpha, self._manifest.output)
        t1 = time.perf_counter()
        data = encode_image(image, self.output_format, self.quality)
        thumbnail = make_thumbnail(image, self.thumbnail_size) if self.thumbnail_size else None
        t2 = time.perf_counter()
        item.timings.postprocess = t1 - t0
        item.timings.encode = t2 - t1
        return TryOnResult(
            image=data,
            width=image.width,
            height=image.height,
            format=self.output_format,
            mime_type=ENCODE_MIME[self.output_format],
            model_version=self.model_version,
            timings=item.timings,
            key=item.key,
            batch_size=output.batch_size,
            thumbnail=thumbnail,
        )

    # ----------------------------------------------------------------- whole jobs
    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn`` over ``items``, each result or its exception, in order (threaded if configured)."""
        def safe(item: Any) -> Any:
            try:
                return fn(item)
            except Exception as exc:  # one bad item fails only itself
                return exc

        if self.io_threads == 1 or len(items) < 2:
            return [safe(item) for item in items]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.io_threads, thread_name_prefix="tryon-io")
        return list(self._pool.map(safe, items))

    def run_batch(self, jobs: Sequence[TryOnJob]) -> list[TryOnResult | Exception]:
        """Run ``jobs`` through one model call per ``max_batch`` items; results in job order.

        Each entry is a ``TryOnResult`` or the exception that failed that item alone (an
        ``ImageError`` for bad input). An ``InferenceError`` fails the items of its model call.
        """
        prepared: list[PreparedJob | Exception] = self._map(self.prepare, jobs)
        results: list[TryOnResult | Exception] = [
            p if isinstance(p, Exception) else InferenceError("item was not processed") for p in prepared
        ]
        ready = [(i, p) for i, p in enumerate(prepared) if not isinstance(p, Exception)]
        step = self.max_batch if self._manifest.dynamic_batch else 1
        for start in range(0, len(ready), step):
            chunk = ready[start:start + step]
            try:
                outs = self.infer([item for _, item in chunk])
            except InferenceError as exc:
                for i, _ in chunk:
                    results[i] = exc
                continue
            pairs = [(item, out) for (_, item), out in zip(chunk, outs, strict=True)]
            rendered = self._map(lambda pair: self.render(*pair), pairs)
            for (i, _), res in zip(chunk, rendered, strict=True):
                results[i] = res
        return results

    def close(self) -> None:
        """Stop the I/O thread pool, if any (the session is freed with the runner)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def run_one(self, person: bytes, cloth: bytes) -> TryOnResult:
        """Run a single job and return its result, raising its error."""
        out = self.run_batch([TryOnJob(person, cloth)])[0]
        if isinstance(out, Exception):
            raise out
        return out


_SHARED: dict[tuple[Any, ...], TryOnRunner] = {}
_SHARED_LOCK = threading.Lock()


def shared_runner(model: str | Path | None = None, **kwargs: Any) -> TryOnRunner:
    """The process-wide runner for these settings, created on first use in *this* process.

    Threads of a worker share it. A runner inherited through ``fork`` is never reused: the child
    builds its own session.
    """
    key = (os.getpid(), str(resolve_model(model)), tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    with _SHARED_LOCK:
        runner = _SHARED.get(key)
        if runner is None:
            for stale in [k for k in _SHARED if k[0] != os.getpid()]:
                del _SHARED[stale]
            runner = TryOnRunner(model, **kwargs)
            _SHARED[key] = runner
        return runner
