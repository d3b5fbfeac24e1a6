"""The try-on inference runner: decode -> preprocess -> one batched model call -> render -> encode.

One runner (one onnxruntime session) per worker process, shared by its threads: ``session.run``
is thread-safe and releases the GIL. onnxruntime is imported only when a runner is constructed,
never at module import, because importing it in a parent that later forks was seen to hang the
child at exit. Build runners in the worker process (Dramatiq's ``after_process_boot``).
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

from core.thread_names import naming_native_threads
from imaging.decode import DEFAULT_MAX_PIXELS, DecodedImage, decode_image
from imaging.encode import ENCODE_MIME, encode_image, make_thumbnail, normalise_format
from models.contract import ModelContractError, ModelManifest, TensorInfo, check_graph, default_opset, load_manifest
from models.pipeline import Placement, prepare_inputs, prepare_person_stage, render_result
from models.registry import STAGE_SEPARATOR, resolve_pipeline
from models.stages import NoPersonError, PersonOutputs, check_pipeline, to_tryon_canvas
from models.subject import (
    COMPARABLE_NEIGHBOUR,
    MultiplePeopleError,
    Subject,
    choose_among_figures,
    choose_subject,
    comparable_neighbour,
    figures_apart,
    mask_strips,
    neighbour_boxes,
)

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
    """Seconds spent per stage for one item.

    ``inference`` is the whole try-on call the item was part of; ``person`` the whole person-stage
    call plus moving its outputs onto the try-on canvas (0 without a person stage).
    """

    decode: float = 0.0
    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0
    encode: float = 0.0
    person: float = 0.0

    @property
    def total(self) -> float:
        """Sum of the stages."""
        return self.decode + self.preprocess + self.person + self.inference + self.postprocess + self.encode


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
    subject: dict[str, Any] | None = None  # who was dressed (models.subject.Subject), with a person stage


@dataclass
class PreparedJob:
    """A decoded, preprocessed item ready for :meth:`TryOnRunner.infer`."""

    person: DecodedImage
    placement: Placement
    tensors: dict[str, npt.NDArray[np.float32]]
    timings: StageTimings = field(default_factory=StageTimings)
    key: Any = None
    person_input: npt.NDArray[np.float32] | None = None
    person_placement: Placement | None = None
    person_outputs: PersonOutputs | None = None
    subject: Subject | None = None


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
        exclusive_model: bool = True,
        max_decode_bytes: int | None = None,
    ) -> None:
        """Load ``model`` (a path or a name under ``models/artefacts``) and check it against its manifest.

        ``intra_op_threads`` defaults to the usable cores divided by ``processes`` (worker processes
        on this host) so processes × threads does not oversubscribe the CPU. Spinning is off unless
        ``allow_spinning``. Providers not installed are skipped with a warning; CPU is the fallback.
        ``io_threads`` > 1 decodes and encodes the items of one ``run_batch`` call in parallel
        (Pillow releases the GIL); useful when the model's threads leave cores idle meanwhile.
        With ``thumbnail_size``, each result also carries a JPEG thumbnail made from the rendered
        image (cheaper than decoding the encoded result again).
        With ``exclusive_model`` (the default) the model calls of the threads that share this runner
        take turns: the model is the one stage on the critical path, and while it runs one batch the
        other threads decode, render, encode, store and complete theirs (a staged pipeline without
        a second session or oversubscribed intra-op threads).
        ``max_decode_bytes`` bounds an input's decode memory, estimated from its header (``imaging.budget``).
        Raises ``ModelContractError`` when the model does not load or does not match its manifest.
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.paths = resolve_pipeline(model)
        self.path = self.paths[-1]
        self.max_batch = max_batch
        self.thumbnail_size = thumbnail_size
        self.output_format = normalise_format(output_format)
        self.quality = quality
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.max_decode_bytes = max_decode_bytes
        self.intra_op_threads = intra_op_threads or default_intra_op_threads(processes)
        self.inter_op_threads = inter_op_threads
        self.allow_spinning = allow_spinning
        self.pid = os.getpid()
        if len(self.paths) > 2:
            raise ModelContractError(f"a pipeline has at most two stages (person + try-on), got {len(self.paths)}")
        stages = [self._load_stage(path, tuple(providers)) for path in self.paths]
        self._session, self._manifest = stages[-1]
        self._person: tuple[onnxruntime.InferenceSession, ModelManifest] | None = (
            stages[0] if len(stages) > 1 else None
        )
        check_pipeline(None if self._person is None else self._person[1], self._manifest)
        out = self._manifest.image_output
        self._output_names = [out.name] + ([out.alpha] if out.alpha else [])
        cloth_specs = [s for s in self._manifest.inputs if s.effective_role in ("cloth", "cloth_mask")]
        self._cloth_side = max((max(s.height, s.width) for s in cloth_specs), default=None)
        self.io_threads = max(1, io_threads)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._model_turn: threading.Lock | None = threading.Lock() if exclusive_model else None

    def _load_stage(
        self, path: Path, providers: tuple[str, ...]
    ) -> tuple[onnxruntime.InferenceSession, ModelManifest]:
        """Open one stage's session and check it against its manifest."""
        session, opset = self._create_session(path, providers)
        manifest = load_manifest(path, dict(session.get_modelmeta().custom_metadata_map))
        check_graph(
            manifest,
            [TensorInfo(i.name, i.type, tuple(i.shape)) for i in session.get_inputs()],
            [TensorInfo(o.name, o.type, tuple(o.shape)) for o in session.get_outputs()],
            model_opset=opset,
            max_batch=self.max_batch,
        )
        return session, manifest

    def _create_session(
        self, path: Path, providers: tuple[str, ...]
    ) -> tuple[onnxruntime.InferenceSession, int | None]:
        import onnx
        import onnxruntime as ort

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise ModelContractError(f"model file {path.name} is not a readable ONNX model: {exc}") from exc
        opset = default_opset(proto)
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
            with _SESSION_LOCK, naming_native_threads("onnx-intra"):
                return ort.InferenceSession(str(path), sess_options=opts, providers=chosen), opset
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "opset" in text.lower():
                raise ModelContractError(
                    f"model {path.name} imports opset {opset}, which onnxruntime "
                    f"{ort.__version__} cannot run: {text}"
                ) from exc
            raise ModelContractError(f"onnxruntime {ort.__version__} cannot load {path.name}: {text}") from exc

    @property
    def manifest(self) -> ModelManifest:
        """The model's manifest (checked against the graph)."""
        return self._manifest

    @property
    def person_stage(self) -> tuple[onnxruntime.InferenceSession, ModelManifest] | None:
        """The person stage's session and manifest (for benchmarks), or ``None``."""
        return self._person

    @property
    def person_manifest(self) -> ModelManifest | None:
        """The person stage's manifest, or ``None`` for a single-stage model."""
        return None if self._person is None else self._person[1]

    @property
    def model_version(self) -> str:
        """The value of ``conversion_metrics.ai_model_version``: the stages' versions joined by ``+``."""
        if self._person is None:
            return self._manifest.version
        return f"{self._person[1].version}{STAGE_SEPARATOR}{self._manifest.version}"

    @property
    def model_name(self) -> str:
        """The stages' manifest names joined by ``+`` (``person-mediapipe+tryon-fit``)."""
        if self._person is None:
            return self._manifest.name
        return f"{self._person[1].name}{STAGE_SEPARATOR}{self._manifest.name}"

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses."""
        return list(self._session.get_providers())

    @property
    def session(self) -> onnxruntime.InferenceSession:
        """The underlying session (for benchmarks that need a bare loop over the same session)."""
        return self._session

    def decode(self, data: bytes, draft_side: int | None = None) -> DecodedImage:
        """Decode one input image with this runner's limits (raises an ``ImageError``)."""
        return decode_image(data, max_pixels=self.max_pixels, max_bytes=self.max_bytes, draft_side=draft_side,
                            max_decode_bytes=self.max_decode_bytes)

    def prepare(self, job: TryOnJob) -> PreparedJob:
        """Decode and preprocess one job. Raises an ``imaging`` error for bad input."""
        t0 = time.perf_counter()
        person = self.decode(job.person)
        # The garment is only ever seen at the model's size, so a JPEG may decode at a reduced scale.
        cloth = self.decode(job.cloth, self._cloth_side)
        t1 = time.perf_counter()
        tensors, placement = prepare_inputs(self._manifest, person, cloth)
        person_input = person_placement = None
        if self._person is not None:
            person_input, person_placement = prepare_person_stage(self._person[1], person)
        t2 = time.perf_counter()
        return PreparedJob(person, placement, tensors, StageTimings(decode=t1 - t0, preprocess=t2 - t1), job.key,
                           person_input, person_placement)

    def find_people(self, items: Sequence[PreparedJob]) -> None:
        """Run the person stage on ``items`` (calls of at most ``max_batch``) and feed its outputs to the
        try-on inputs. Sets ``person_outputs`` on each item. Raises ``InferenceError`` when it fails."""
        if self._person is None or not items:
            return
        session, manifest = self._person
        roles = sorted(manifest.provides)
        names = [manifest.provides[r] for r in roles]
        step = self.max_batch if manifest.dynamic_batch else 1
        for start in range(0, len(items), step):
            chunk = items[start:start + step]
            t0 = time.perf_counter()
            try:
                feeds = {manifest.person_input.name: np.stack([it.person_input for it in chunk])}  # type: ignore[misc]
                results = dict(zip(roles, session.run(names, feeds), strict=True))
            except Exception as exc:
                raise InferenceError(f"person stage {manifest.name} failed on a batch of {len(chunk)}: {exc}") from exc
            for i, item in enumerate(chunk):
                assert item.person_placement is not None
                outputs = PersonOutputs(
                    score=float(results["person_score"][i].reshape(-1)[0]),
                    placement=item.person_placement,
                    mask=results["person_mask"][i] if "person_mask" in results else None,
                    parse=results["person_parse"][i] if "person_parse" in results else None,
                    keypoints=results["pose_keypoints"][i] if "pose_keypoints" in results else None,
                )
                item.person_outputs = outputs
                if outputs.score >= manifest.min_person_score:
                    item.tensors.update(to_tryon_canvas(outputs, self._manifest.needs, item.placement))
            seconds = time.perf_counter() - t0
            for item in chunk:
                item.timings.person = seconds

    def analyse_person(self, person: bytes) -> PersonOutputs:
        """The person stage's view of one photo (mask, keypoints, score) as the try-on stage gets it
        (after a second look that found the person to dress: that figure's); for tools and tests."""
        if self._person is None:
            raise ModelContractError(f"model {self.model_name} has no person stage")
        item = self.prepare(TryOnJob(person, person))
        self.find_people([item])
        self._no_person(item)
        assert item.person_outputs is not None
        return item.person_outputs

    def _no_person(self, item: PreparedJob) -> Exception | None:
        """The item's refusal: no person, no torso, several people (``None``: dress it)."""
        out = item.person_outputs
        if self._person is None or out is None:
            return None
        if out.score < self._person[1].min_person_score:
            return self._second_look(item, out)
        try:
            item.subject = choose_subject(out)
        except Exception as exc:  # NoTorsoError, MultiplePeopleError: this item only
            return exc
        if item.subject.other_figures:
            # Neighbours sitting close lend the person's generous columns their mass: look at them alone.
            share = comparable_neighbour(out, self._look_at(item, neighbour_boxes(out, item.subject)),
                                         self._person[1].min_person_score)
            if share >= COMPARABLE_NEIGHBOUR:
                return MultiplePeopleError(
                    f"several people in the photo and none clearly the subject (a person beside the one found, "
                    f"shoulders {share:.0%} as wide, is not clearly smaller); crop the photo to one person")
        return None

    def _second_look(self, item: PreparedJob, out: PersonOutputs) -> Exception | None:
        """A photo scored below the threshold whose person mask splits into figures side by side.

        The pose crop spanned them all and held no single person (``figures_apart``). Each figure's
        crop goes through the person stage once more (one call). When the largest figure is a
        person and clearly dominates (the first path's rule: ``DOMINANCE`` × the next figure's mask
        mass, its shoulders in the middle of the photo) it is dressed: its crop's mask and keypoints
        are moved onto the whole photo (``stages.from_crop``) and recorded in ``subject``. Otherwise
        two or more people are ``MultiplePeopleError``, fewer ``NoPersonError``.
        """
        assert self._person is not None
        manifest = self._person[1]
        figures = figures_apart(out)
        views = self._look_at(item, [f.box for f in figures])
        if not figures:
            # People standing close (a street group) do not split the mask: count them in strips of it.
            # Strips cut people in half, so they only tell several people from none; nobody is dressed.
            strips = self._look_at(item, mask_strips(out))
            found = [v.score for v in strips if v.score >= manifest.min_person_score]
            if len(found) >= 2:
                return MultiplePeopleError(
                    f"several people in the photo and none clearly the subject (the person stage finds people "
                    f"in {len(found)} of {len(strips)} strips of it, scores {', '.join(f'{v:.2f}' for v in found)}, "
                    f"but not one in the whole photo, score {out.score:.2f}); crop the photo to one person")
        try:
            item.subject, item.person_outputs = choose_among_figures(out, figures, views, manifest.min_person_score)
        except NoPersonError:
            return NoPersonError(f"no person found in the photo (person score {out.score:.2f} < "
                                 f"{manifest.min_person_score:.2f}, model {manifest.name})")
        except Exception as exc:  # MultiplePeopleError, NoTorsoError
            return exc
        item.tensors.update(to_tryon_canvas(item.person_outputs, self._manifest.needs, item.placement))
        return None

    def _look_at(self, item: PreparedJob, boxes: Sequence[tuple[int, int, int, int]]) -> list[PersonOutputs]:
        """The person stage's view of each crop ``boxes`` (x0, y0, x1, y1, photo px) of ``item``'s photo."""
        assert self._person is not None
        session, manifest = self._person
        roles = sorted(manifest.provides)
        names = [manifest.provides[r] for r in roles]
        crops, placements = [], []
        for x0, y0, x1, y1 in boxes:
            rgb = np.ascontiguousarray(item.person.rgb[y0:y1, x0:x1])
            crop = DecodedImage(rgb, None, item.person.format, item.person.mime_type, x1 - x0, y1 - y0)
            tensor, placement = prepare_person_stage(manifest, crop)
            crops.append(tensor)
            placements.append(placement)
        views: list[PersonOutputs] = []
        step = max(1, len(crops)) if manifest.dynamic_batch else 1
        for start in range(0, len(crops), step):
            try:
                results = dict(zip(roles, session.run(names, {manifest.person_input.name:
                                                              np.stack(crops[start:start + step])}), strict=True))
            except Exception as exc:
                raise InferenceError(f"person stage {manifest.name} failed on a second look: {exc}") from exc
            for i, placement in enumerate(placements[start:start + step]):
                views.append(PersonOutputs(
                    score=float(results["person_score"][i].reshape(-1)[0]), placement=placement,
                    mask=results["person_mask"][i] if "person_mask" in results else None,
                    keypoints=results["pose_keypoints"][i] if "pose_keypoints" in results else None))
        return views

    def infer(self, items: Sequence[PreparedJob]) -> list[ModelOutput | Exception]:
        """Run the person stage (if any) and the try-on model on ``items`` in calls of at most
        ``max_batch``; outputs in item order. An item whose photo shows no person gets a
        ``NoPersonError`` in its place (no torso: ``NoTorsoError``; several people, none clearly
        the subject: ``MultiplePeopleError``) and is left out of the try-on call.

        Raises ``InferenceError`` when onnxruntime fails.
        """
        self.find_people(items)
        outputs: list[ModelOutput | Exception] = []
        missing = [self._no_person(item) for item in items]
        ready = [item for item, err in zip(items, missing, strict=True) if err is None]
        step = self.max_batch if self._manifest.dynamic_batch else 1
        done: list[ModelOutput] = []
        for start in range(0, len(ready), step):
            chunk = ready[start:start + step]
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
                done.append(ModelOutput(results[0][i], None if alpha is None else alpha[i], seconds, len(chunk)))
        found = iter(done)
        for err in missing:
            outputs.append(err if err is not None else next(found))
        return outputs

    def render(self, item: PreparedJob, output: ModelOutput) -> TryOnResult:
        """Post-process one item back to the person's original size and encode it."""
        t0 = time.perf_counter()
        image = render_result(item.person, item.placement, output.result, output.alpha, self._manifest.image_output)
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
            subject=None if item.subject is None else item.subject.as_dict(),
        )

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
        ``ImageError`` for bad input, a ``NoPersonError`` when the person stage finds nobody). An
        ``InferenceError`` fails the items of its model call.
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
                if self._model_turn is None:
                    outs = self.infer([item for _, item in chunk])
                else:
                    with self._model_turn:
                        outs = self.infer([item for _, item in chunk])
            except InferenceError as exc:
                for i, _ in chunk:
                    results[i] = exc
                continue
            pairs = [(item, out) for (_, item), out in zip(chunk, outs, strict=True) if not isinstance(out, Exception)]
            rendered = iter(self._map(lambda pair: self.render(*pair), pairs))
            for (i, _), out in zip(chunk, outs, strict=True):
                results[i] = out if isinstance(out, Exception) else next(rendered)
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
