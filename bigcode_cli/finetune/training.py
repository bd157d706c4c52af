"""Fine-tuning a classification or tagging head on our own model, and saving it as a transformers checkpoint.

The base checkpoint (usually a causal LM) gives the backbone; a fresh head is trained, with the top
`unfreeze` blocks (and the final LayerNorm) too when asked. AdamW, shuffled length-padded batches,
evaluation every epoch (or every `eval_every` steps) with accuracy / macro-F1 (classify) or exact
span F1 (tag), early stopping after `patience` evaluations without improvement, and the best
weights saved with config (id2label, label2id, problem_type, pad_token_id, architectures),
model.safetensors and the base's tokenizer files.

With a frozen backbone a classifier's pooled features never change, so they are computed once and
only the head trains on them: head-only fine-tuning costs one forward pass over the data.
"""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigcode_cli import collector
from bigcode_cli.choices import listed
from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.errors import InputError, StoreError, UsageError
from bigcode_cli.finetune.data import Example, build_examples, classification_metrics, main_metric, read_jsonl
from bigcode_cli.pipelines.tagging import f1, span_scores, spans_from_tokens
from bigcode_cli.tasks import FINETUNE_MODES, TASKS

if TYPE_CHECKING:
    import torch

    from bigcode_cli.model.gpt_bigcode import GPTBigCodePreTrained

IGNORE = -100  # label of padding positions in the token loss


@dataclass
class FinetuneOptions:
    """Everything `bigcode finetune` takes."""

    task: str  # "classify" or "tag"
    train: Path
    eval: Path | None = None
    base: str | None = None  # None: the bundled causal LM
    name: str | None = None  # register the result in the cache under this name
    out: Path | None = None  # or write it to this directory
    epochs: int = 3
    lr: float | None = None  # None: 2e-3 for the head alone, 5e-4 with unfrozen blocks
    batch_size: int = 16
    unfreeze: int = 0
    max_length: int = 256
    seed: int = 0
    device: str = "auto"
    patience: int = 2
    eval_every: int = 0  # steps between evaluations; 0 = once per epoch
    offline: bool = False
    force: bool = False

    def learning_rate(self) -> float:
        """The learning rate to use."""
        if self.lr is not None:
            return self.lr
        return 5e-4 if self.unfreeze else 2e-3


@dataclass
class Event:
    """Progress reported to the caller: start, step, eval, stop, saved."""

    kind: str
    step: int = 0
    total: int = 0
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    best: bool = False
    message: str = ""


@dataclass
class FinetuneResult:
    """Where the checkpoint went and how good it is."""

    path: Path
    name: str | None
    labels: list[str]
    metrics: dict[str, float]  # of the best evaluation (empty without --eval)
    steps: int
    seconds: float


# ---------------------------------------------------------------------------------------------
# training


def _pad(rows: list[list[int]], pad_id: int, fill: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids (or labels padded with `fill`) and the (B, T) attention mask."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id if fill is None else fill, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids, mask


class Trainer:
    """One fine-tuning run: the model, its trainable part, the data, and the loop."""

    def __init__(self, model: GPTBigCodePreTrained, options: FinetuneOptions, labels: list[str], multi: bool,
                 pad_id: int, device: torch.device, on_event: Callable[[Event], None]) -> None:
        import torch

        self.model, self.options, self.labels, self.multi = model, options, labels, multi
        self.pad_id, self.device, self.on_event = pad_id, device, on_event
        self.task = options.task
        for p in model.parameters():
            p.requires_grad_(False)
        self.head = getattr(model, TASKS[FINETUNE_MODES[self.task]].head)
        trainable: list[torch.nn.Module] = [self.head]
        if options.unfreeze:
            trainable += list(model.transformer.h[-options.unfreeze:]) + [model.transformer.ln_f]
        self.trainable = trainable
        self.params = [p for m in trainable for p in m.parameters()]
        for p in self.params:
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(self.params, lr=options.learning_rate(), weight_decay=0.01)
        self.cached = self.task == "classify" and not options.unfreeze  # train the head on fixed features

    # -- forward pieces ------------------------------------------------------------------------

    def _pooled(self, examples: list[Example]) -> torch.Tensor:
        """(N, C) frozen-backbone features at each example's last token, in order."""
        import torch

        from bigcode_cli.model.gpt_bigcode import last_token_index

        out = torch.empty((len(examples), self.model.config.n_embd), device=self.device)
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
        self.model.eval()
        with torch.no_grad():
            for begin in range(0, len(order), 64):
                rows = order[begin:begin + 64]
                ids, mask = _pad([examples[i].ids for i in rows], self.pad_id)
                ids, mask = ids.to(self.device), mask.to(self.device)
                hidden = self.model.transformer(ids, mask)
                last = last_token_index(ids, mask, None)
                out[torch.tensor(rows, device=self.device)] = hidden[torch.arange(len(rows), device=self.device), last]
        return out

    def _logits(self, batch: list[Example], features: torch.Tensor | None, rows: list[int]) -> torch.Tensor:
        if features is not None:
            return self.head(features[rows])
        ids, mask = _pad([e.ids for e in batch], self.pad_id)
        return self.model(ids.to(self.device), mask.to(self.device))

    def _loss(self, logits: torch.Tensor, batch: list[Example]) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        if self.task == "tag":
            targets, _ = _pad([e.target for e in batch], self.pad_id, fill=IGNORE)
            return F.cross_entropy(logits.flatten(0, 1), targets.to(self.device).flatten(), ignore_index=IGNORE)
        if self.multi:
            targets = torch.tensor([e.target for e in batch], dtype=torch.float32, device=self.device)
            return F.binary_cross_entropy_with_logits(logits, targets)
        targets = torch.tensor([e.target for e in batch], dtype=torch.long, device=self.device)
        return F.cross_entropy(logits, targets)

    def _train_mode(self) -> None:
        self.model.eval()  # frozen parts: no dropout, like at inference
        for module in self.trainable:
            module.train()

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(self, examples: list[Example], features: torch.Tensor | None) -> dict[str, float]:
        """Metrics of the current weights on `examples`."""
        import torch

        self.model.eval()
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
        predicted: list[Any] = [None] * len(examples)
        with torch.no_grad():
            for begin in range(0, len(order), self.options.batch_size):
                rows = order[begin:begin + self.options.batch_size]
                batch = [examples[i] for i in rows]
                logits = self._logits(batch, features, rows).float().cpu()
                for r, i in enumerate(rows):
                    predicted[i] = self._decode(logits[r], examples[i])
        if self.task == "classify":
            return classification_metrics(predicted, [e.target for e in examples], len(self.labels), self.multi)
        tp = n_pred = n_gold = 0
        for spans, example in zip(predicted, examples):
            a, b, c = span_scores(spans, [(s["label"], s["start"], s["end"]) for s in example.spans])
            tp, n_pred, n_gold = tp + a, n_pred + b, n_gold + c
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        return {"span_precision": precision, "span_recall": recall, "span_f1": f1(tp, n_pred, n_gold)}

    def _decode(self, logits: torch.Tensor, example: Example) -> Any:
        if self.task == "classify":
            if self.multi:
                return [1.0 if p >= 0.5 else 0.0 for p in logits.sigmoid().tolist()]
            return int(logits.argmax())
        probs = logits[:len(example.ids)].softmax(-1)
        best, index = probs.max(-1)
        predictions = [(self.labels[i], p) for i, p in zip(index.tolist(), best.tolist())]
        return [(s.label, s.start, s.end) for s in spans_from_tokens(example.text, example.offsets, predictions, "word")]

    # -- the loop ------------------------------------------------------------------------------

    def fit(self, train: list[Example], held_out: list[Example] | None) -> tuple[dict[str, float], int]:
        """Train, evaluate, stop early; leaves the best weights in the model. Returns (best metrics, steps)."""
        import torch

        options = self.options
        rng = random.Random(options.seed)
        train_features = self._pooled(train) if self.cached else None
        eval_features = self._pooled(held_out) if self.cached and held_out else None
        steps_per_epoch = math.ceil(len(train) / options.batch_size)
        total = steps_per_epoch * options.epochs
        self.on_event(Event("start", 0, total, message=f"{len(train)} examples, {len(self.labels)} labels"))
        metric = main_metric(self.task, self.multi)
        best_metrics: dict[str, float] = {}
        best_value, best_state, bad, step = -1.0, None, 0, 0

        def checkpoint() -> bool:
            nonlocal best_value, best_state, bad, best_metrics
            metrics = self.evaluate(held_out, eval_features)
            improved = metrics[metric] > best_value + 1e-9
            if improved:
                best_value, best_metrics, bad = metrics[metric], metrics, 0
                best_state = [p.detach().clone() for p in self.params]
            else:
                bad += 1
            self.on_event(Event("eval", step, total, metrics=metrics, best=improved))
            if bad >= options.patience:
                self.on_event(Event("stop", step, total, message=f"no better {metric} in {bad} evaluations"))
                return True
            return False

        stop = False
        for _ in range(options.epochs):
            order = list(range(len(train)))
            rng.shuffle(order)
            for begin in range(0, len(order), options.batch_size):
                rows = order[begin:begin + options.batch_size]
                batch = [train[i] for i in rows]
                self._train_mode()
                loss = self._loss(self._logits(batch, train_features, rows), batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.optimizer.step()
                step += 1
                self.on_event(Event("step", step, total, loss=loss.detach().item()))
                if held_out and options.eval_every and step % options.eval_every == 0 and checkpoint():
                    stop = True
                    break
            if stop:
                break
            if held_out and not options.eval_every and checkpoint():
                break
        if held_out and options.eval_every and step % options.eval_every:
            checkpoint()  # the last steps since the previous evaluation
        if best_state is not None:
            with torch.no_grad():
                for p, saved in zip(self.params, best_state):
                    p.copy_(saved)
        self.model.eval()
        return best_metrics, step


# ---------------------------------------------------------------------------------------------
# the service


def save_model(model: GPTBigCodePreTrained, config: GPTBigCodeConfig, tokenizer_dir: Path, directory: Path) -> Path:
    """Write a transformers checkpoint: config.json, model.safetensors, the tokenizer files."""
    from safetensors.torch import save_file

    from bigcode_cli.model.checkpoint_files import TOKENIZER_FILES

    directory.mkdir(parents=True, exist_ok=True)
    config.save(directory)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, directory / name)
    return directory


def _check_destination(options: FinetuneOptions) -> None:
    """Refuse before training when the result could not be saved."""
    from bigcode_cli import store

    if options.name is None and options.out is None:
        raise UsageError("say where the model goes: --name NAME (into the cache) or --out DIR")
    if options.out is not None and options.out.exists():
        if not options.out.is_dir() or (any(options.out.iterdir()) and not options.force):
            raise InputError(f"--out {options.out} exists and is not empty; choose another directory or pass --force")
    if options.name is not None and not options.force:
        try:
            found = store.resolve(options.name, offline=True)
        except Exception:  # not found, or not a valid model: either way the import will tell
            return
        if found.source == "cache":
            raise StoreError(f"{options.name} already exists in the cache; choose another --name or pass --force")


def finetune(options: FinetuneOptions, on_event: Callable[[Event], None] | None = None) -> FinetuneResult:
    """Train a head for `options.task` on `options.train` and save the checkpoint."""
    import torch

    from bigcode_cli import store
    from bigcode_cli.model.runtime import resolve_device
    from bigcode_cli.store.loader import check_vocabulary
    from bigcode_cli.text.tokenizer import Tokenizer
    from bigcode_cli.model.weights import build_model, load_state_dict

    collector.startup_done()  # torch and the model code are imported (bigcode_cli.collector)
    started = time.perf_counter()
    on_event = on_event or (lambda event: None)
    if options.task not in FINETUNE_MODES:
        raise InputError(f"unknown finetune task {options.task!r}; choose {listed(FINETUNE_MODES)}")
    row = TASKS[FINETUNE_MODES[options.task]]
    for name, value, low in (("--epochs", options.epochs, 1), ("--batch-size", options.batch_size, 1),
                             ("--max-length", options.max_length, 1), ("--patience", options.patience, 1),
                             ("--unfreeze", options.unfreeze, 0), ("--eval-every", options.eval_every, 0)):
        if value < low:
            raise UsageError(f"{name} must be at least {low}, got {value}")
    _check_destination(options)

    resolved = store.resolve(options.base or store.default_model("causal-lm"), offline=options.offline)
    base_config = GPTBigCodeConfig.from_file(resolved.path / "config.json")
    if options.unfreeze > base_config.n_layer:
        raise InputError(f"--unfreeze {options.unfreeze}: {resolved.name} has only {base_config.n_layer} blocks")
    tokenizer = Tokenizer.from_dir(resolved.path, name=resolved.name)
    check_vocabulary(tokenizer, resolved)
    max_length = min(options.max_length, base_config.n_positions)

    train_rows = read_jsonl(options.train)
    train, labels, multi = build_examples(options.task, train_rows, options.train, tokenizer, max_length, None)
    if options.task == "classify" and len(labels) < 2 and not multi:
        raise InputError(f"{options.train} has only one label ({labels[0]}); a classifier needs at least two")
    held_out = None
    if options.eval is not None:
        held_out, _, _ = build_examples(options.task, read_jsonl(options.eval), options.eval, tokenizer, max_length,
                                        labels, multi)

    pad_id = base_config.pad_token_id if base_config.pad_token_id is not None else tokenizer.pad_id
    problem = None
    if options.task == "classify":
        problem = "multi_label_classification" if multi else "single_label_classification"
    id2label = dict(enumerate(labels))
    config = dataclasses.replace(
        base_config, id2label=id2label, label2id={v: k for k, v in id2label.items()}, problem_type=problem,
        pad_token_id=pad_id if pad_id is not None else 0, architectures=[row.model_class],
        torch_dtype="float32",
    )
    device = resolve_device(options.device)
    torch.manual_seed(options.seed)
    model = build_model(config, row.name, load_state_dict(resolved.path), dtype=torch.float32,
                        device=device, source=str(resolved.path), new_head=True)
    trainer = Trainer(model, options, labels, multi, config.pad_token_id, device, on_event)
    with torch.inference_mode(False):
        metrics, steps = trainer.fit(train, held_out)

    if options.out is not None:
        path = save_model(model, config, resolved.path, options.out)
        if options.name is not None:
            path = store.import_checkpoint(path, options.name, force=options.force).path
    else:
        with tempfile.TemporaryDirectory(prefix="bigcode-finetune-") as tmp:
            save_model(model, config, resolved.path, Path(tmp) / "checkpoint")
            path = store.import_checkpoint(Path(tmp) / "checkpoint", options.name, force=options.force).path
    on_event(Event("saved", steps, steps, metrics=metrics, message=str(path)))
    return FinetuneResult(path, options.name, labels, metrics, steps, time.perf_counter() - started)
