"""`bigcode eval humaneval` speed: problems per minute against transformers' generate(), and sandbox executions
per second with --jobs 1 and --jobs 2.

    python benchmarks/eval_speed.py [--model bigcode-tiny] [--problems 20] [--rounds 2] [--executions 164]

generation   per round, interleaved (A B, then B A): the first --problems HumanEval problems, -n 1, greedy,
             completed by bigcode's generation service (stopping at HumanEval's stop strings, at most
             --max-new-tokens) and by transformers' GPTBigCodeForCausalLM.generate() on the same checkpoint in the
             same dtype, made to generate exactly as many tokens as bigcode did for that problem (the two greedy
             paths may part in bf16, so equal work is fixed by count, as in complete_e2e.py). Each completion is
             then run by the same sandbox (--jobs 1). Problems per minute, medians over rounds, and their ratio.
             One untimed warm-up problem per engine first.
execution    per round, interleaved: the canonical solutions of the first --executions problems through the
             sandbox with --jobs 1 and --jobs 2. Executions per second, medians, and their ratio.
Results are printed as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def native_completer(model: str, max_new_tokens: int, new_tokens: dict[str, int]):
    """bigcode's own path, as the eval completer runs it (complete() with the problem's settings), noting how
    many tokens each problem took."""
    from bigcode_cli.eval.completer import problem_settings
    from bigcode_cli.generation.completion import CompletionSettings, complete
    from bigcode_cli.generation.sampling import SamplingParams
    from bigcode_cli.store.loader import open_model

    loaded = open_model(model, "causal-lm")
    settings = CompletionSettings(max_new_tokens=max_new_tokens, sampling=SamplingParams(temperature=0.0), block=False)

    def generate(problem, samples):
        result = complete(loaded.runner, loaded.tokenizer, problem.prompt, problem.suffix, problem.mode,
                          problem_settings(settings, problem, samples))
        new_tokens[problem.task_id] = max(len(s.token_ids) for s in result.generation.samples)
        return [problem.trim(text) for text in result.texts]

    return generate, loaded


def transformers_completer(path: str, dtype, new_tokens: dict[str, int]):
    """The reference: transformers' generate() on the same checkpoint, greedy, as many tokens as bigcode made."""
    import torch
    from transformers import AutoTokenizer, GPTBigCodeForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = GPTBigCodeForCausalLM.from_pretrained(path, dtype=dtype).eval()

    def generate(problem, samples):
        ids = tokenizer(problem.prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            count = max(new_tokens[problem.task_id], 1)
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=count, min_new_tokens=count,
                                 do_sample=False, pad_token_id=tokenizer.eos_token_id)
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        return [problem.trim(text)] * samples

    return generate


def timed(problems, generate, sandbox, jobs: int) -> float:
    from bigcode_cli.eval.evaluation import evaluate

    started = time.perf_counter()
    evaluate(problems, 1, generate, sandbox=sandbox, jobs=jobs)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bigcode-tiny")
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--executions", type=int, default=164)
    args = parser.parse_args()

    from bigcode_cli.eval.humaneval import humaneval, humaneval_rows
    from bigcode_cli.eval.sandbox import Sandbox

    sandbox = Sandbox()
    problems = humaneval()[: args.problems]
    new_tokens: dict[str, int] = {}
    native, loaded = native_completer(args.model, args.max_new_tokens, new_tokens)
    reference = transformers_completer(str(loaded.resolved.path), loaded.runner.dtype, new_tokens)
    for generate in (native, reference):  # warm-up, untimed
        generate(problems[0], 1)
    rates: dict[str, list[float]] = {"bigcode": [], "transformers": []}
    for problem in problems:  # bigcode's token counts, so that even a first round of B A gives both the same work
        native(problem, 1)
    for round_ in range(args.rounds):
        order = [("bigcode", native), ("transformers", reference)]
        for name, generate in order if round_ % 2 == 0 else reversed(order):
            rates[name].append(len(problems) / timed(problems, generate, sandbox, 1) * 60)

    rows = {row["task_id"]: row["canonical_solution"] for row in humaneval_rows()}
    canonical = humaneval()[: args.executions]
    read_back = lambda problem, samples: [rows[problem.task_id]] * samples  # noqa: E731
    per_s: dict[int, list[float]] = {1: [], 2: []}
    for round_ in range(args.rounds):
        for jobs in (1, 2) if round_ % 2 == 0 else (2, 1):
            per_s[jobs].append(len(canonical) / timed(canonical, read_back, sandbox, jobs))

    medians = {name: statistics.median(values) for name, values in rates.items()}
    executions = {jobs: statistics.median(values) for jobs, values in per_s.items()}
    print(json.dumps({
        "model": args.model, "dtype": str(loaded.runner.dtype).removeprefix("torch."), "problems": len(problems),
        "max_new_tokens": args.max_new_tokens, "rounds": args.rounds, "new_tokens": sum(new_tokens.values()),
        "problems_per_minute": {name: round(value, 2) for name, value in medians.items()},
        "bigcode_over_transformers": round(medians["bigcode"] / medians["transformers"], 2),
        "executions": len(canonical),
        "executions_per_s": {f"jobs {jobs}": round(value, 2) for jobs, value in executions.items()},
        "jobs_2_over_jobs_1": round(executions[2] / executions[1], 2),
        "sandbox": sandbox.containment.describe(),
    }, indent=2))


if __name__ == "__main__":
    main()
