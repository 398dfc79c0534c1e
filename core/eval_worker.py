"""A Ray worker of an evaluation: one loaded model in an actor, streaming the videos it is sent.

infinipot.eval_ray starts these as Ray actors and sends each one video at a time. The worker
runs `Evaluation.video_events` for it on a thread and yields what comes (a Ray streaming
generator), so the driver gets every answer as soon as it exists and the stream's progress at
most every PROGRESS_SECONDS. The worker keeps no results: it has no log, the driver writes them.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator

from infinipot.evaluation import Evaluation, VideoPlan

PROGRESS_SECONDS = 0.5


class VideoWorker:
    """The body of a Ray actor (wrapped with `ray.remote` by the driver, so this module needs no Ray)."""

    def __init__(self, settings, device: str, cache_dir: str | None, ask_options: dict, open_options: dict) -> None:
        from infinipot.model import Model

        self.evaluation = Evaluation.worker(settings, model=Model(settings, device), cache_dir=cache_dir,
                                            ask_options=ask_options, open_options=open_options)

    def start(self) -> tuple[str, float]:
        """Load the weights (once, for the worker's life); returns where it runs ("host (GPU 0)") and the
        seconds the loading took."""
        import ray

        began = time.perf_counter()
        self.evaluation.model.adapter  # noqa: B018 -- loads the weights
        gpus = ray.get_gpu_ids()
        place = socket.gethostname() + (f" (GPU {','.join(map(str, gpus))})" if gpus else "")
        return place, time.perf_counter() - began

    def run_video(self, index: int, total: int, video: VideoPlan) -> Iterator:
        """Stream one video on a thread; yield its events, and its progress at most every PROGRESS_SECONDS."""
        events: queue.Queue = queue.Queue()
        last = [0.0]

        def report(event) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_SECONDS:
                last[0] = now
                events.put(("item", event))

        def work() -> None:
            try:
                for event in self.evaluation.video_events(index, total, video, report):
                    events.put(("item", event))
            except BaseException as error:  # raised again below, in the task, for the driver to see
                events.put(("error", error))
            else:
                events.put(("end", None))

        threading.Thread(target=work, name=f"video-{index}", daemon=True).start()
        while True:
            kind, item = events.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
