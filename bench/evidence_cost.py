"""What `--evidence` costs: answer time with and without it, for the real model shapes of bench/gpu.py.

Random weights in the real configurations (bench/gpu.py, nothing downloaded), bf16 and sdpa as a
user runs them. Each model streams a synthetic video at 1 fps into a --budget cache, then answers
the same question --rounds times without evidence and --rounds times with it, interleaved; per
model it reports the median answer seconds of each, the median evidence pass, its share of the
answer time, the whole overhead (hooks included) and whether every answer was the same.

    python bench/evidence_cost.py                          # cuda, 3 models, 5-minute video, budget 6000
    python bench/evidence_cost.py --device cpu --dry-run   # the script itself, on the tiny models
    python bench/evidence_cost.py --device cpu --models qwen2.5-vl-7b --text-layers 2 --vision-depth 1 \
        --minutes 1                                        # the 7B layer shape on a CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT  # noqa: E402
from gpu import REAL, build, video  # noqa: E402

QUESTION = "When does the red square appear, and what does it do?"


def timed_answer(session, evidence: bool, tokens: int, cuda: bool):
    import torch

    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    answer = session.ask(QUESTION, max_new_tokens=tokens, evidence=evidence)
    if cuda:
        torch.cuda.synchronize()
    return answer, time.perf_counter() - start


def measure(model, path: Path, budget: int, rounds: int, tokens: int, cuda: bool) -> dict:
    from infinipot import Session

    session = Session(model.settings.replace(budget=budget, fps=1.0), model=model)
    session.stream(path)
    timed_answer(session, True, 4, cuda)  # warm both paths
    timed_answer(session, False, 4, cuda)
    plain, found, texts = [], [], set()
    for _ in range(rounds):
        answer, seconds = timed_answer(session, False, tokens, cuda)
        plain.append(seconds)
        texts.add((answer.text, answer.tokens))
        answer, seconds = timed_answer(session, True, tokens, cuda)
        found.append((seconds, answer.evidence))
        texts.add((answer.text, answer.tokens))
    plain_s = statistics.median(plain)
    with_s = statistics.median(seconds for seconds, _ in found)
    evidence = [item.seconds for _, item in found]
    last = found[-1][1]
    result = {
        "cached_tokens": session.cache.visual_tokens, "cache_length": session.cache.seq_length(),
        "answer_tokens": answer.tokens, "query_tokens": last.query_tokens,
        "answer_s": round(plain_s, 4), "answer_with_evidence_s": round(with_s, 4),
        "evidence_pass_s": round(statistics.median(evidence), 4),
        "evidence_pass_share": round(statistics.median(evidence) / plain_s, 4),
        "overhead_share": round(with_s / plain_s - 1, 4), "same_answer": len(texts) == 1,
        "moments": [f"{moment.start:.1f}-{moment.end:.1f} s {moment.share:.0%}" for moment in last.moments],
    }
    session.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default=",".join(REAL))
    parser.add_argument("--minutes", type=float, default=None, help="video length (default 5; 0.5 dry run)")
    parser.add_argument("--budget", type=int, default=None, help="token budget (default 6000; 96 dry run)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64, help="answer length (random weights rarely stop)")
    parser.add_argument("--dry-run", action="store_true", help="tiny models, short video: checks the script")
    parser.add_argument("--text-layers", type=int, default=None, help="fewer decoder layers of the real shape "
                        "(per-layer ratios stay those of the real model: for a CPU run)")
    parser.add_argument("--vision-depth", type=int, default=None, help="fewer vision layers (Qwen2.5-VL, LLaVA)")
    parser.add_argument("--out", type=Path, default=OUT / "evidence_cost.json")
    args = parser.parse_args()
    for spec in REAL.values():  # a CPU run keeps each layer's shape and drops layers
        if args.text_layers:
            spec["text"]["num_hidden_layers"] = args.text_layers
        if args.vision_depth:
            spec["vision"]["depth" if "depth" in spec["vision"] else "num_hidden_layers"] = args.vision_depth
    import torch

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --device cpu --dry-run to check the script")
    minutes = args.minutes or (0.5 if args.dry_run else 5.0)
    budget = args.budget or (96 if args.dry_run else 6000)
    report = {"device": args.device, "gpu": torch.cuda.get_device_name() if cuda else None, "budget": budget,
              "text_layers": args.text_layers, "vision_depth": args.vision_depth,
              "minutes": minutes, "tokens": args.tokens, "models": {}}
    for name in args.models.split(","):
        model, _ = build(name, args.device, args.dry_run)
        report["models"][name] = measure(model, video(minutes, args.dry_run), budget, args.rounds, args.tokens, cuda)
        print(f"{name}: {json.dumps(report['models'][name])}", flush=True)
        del model
        if cuda:
            torch.cuda.empty_cache()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
