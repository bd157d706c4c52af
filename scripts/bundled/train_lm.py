"""Train the bundled `bigcode-tiny` code LM: next-token prediction plus fill-in-the-middle.

Recipe (after scripts/bundled/corpus.py and pretokenize.py; the tokenizer is the shipped one):

    python scripts/bundled/train_lm.py --minutes 60 --threads 1 --init bigcode_cli/bundled/bigcode-tiny \
        --out runs/lm/model                      # continue the shipped model on this CPU
    python scripts/bundled/train_lm.py --device cuda --minutes 60 --batch 64   # a GPU, same recipe

It trains our own model (bigcode_cli.model.gpt_bigcode), checkpoints to runs/lm/state.pt every few minutes and
at the end (rerunning the same command resumes from it; `--segment-minutes` ends one run early so that the
model can be evaluated between segments of one learning-rate schedule), and writes a Hugging Face checkpoint
(config.json, model.safetensors in bfloat16, tokenizer files, training.json, manifest) to --out.
`--init DIR` starts from a shipped checkpoint's weights instead of a random initialisation (position
embeddings cut to --context); without a saved state and without --init, training starts from scratch.

The model's context (n_positions) is the training length: positions it never trained on would be read
by every long prompt (`bigcode complete` fills the whole context).

Fill-in-the-middle (scripts/bundled/fim_training.py): each document piece of a training window (a whole
file, or the part of a long file the window holds) becomes, with probability --fim-rate, a FIM example
built by the same function inference uses, PSM or SPM (half each), with its middle the rest of one line,
a block, or a random span:
    PSM  <fim_prefix> prefix <fim_suffix> suffix <fim_middle> middle <|endoftext|>
    SPM  <fim_prefix> <fim_suffix> suffix <fim_middle> prefix middle <|endoftext|>
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bigcode_cli.model.attention import BACKENDS
from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.model.gpt_bigcode import GPTBigCodeForCausalLM
from bigcode_cli.model.runtime import cpu_multiplies_bf16
from bigcode_cli.store.writing import record_hashes
from bigcode_cli.text.tokenizer import Tokenizer
from fim_training import EOS, fim_piece

ROOT = Path(__file__).resolve().parents[2]
IGNORE = -100  # target of positions past a row's end
FIM_SLACK = 16  # tokens a window leaves free for a FIM example's sentinels and separate encodings
MIN_FIM_TOKENS = 8  # shorter pieces stay plain text


def model_config(vocab_size: int, context: int) -> GPTBigCodeConfig:
    """The shipped model's shape: small enough to train on a laptop CPU in about an hour; context = training length."""
    return GPTBigCodeConfig(
        vocab_size=vocab_size, n_positions=context, n_embd=256, n_layer=4, n_head=4, n_inner=1024,
        multi_query=True, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=None,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, architectures=["GPTBigCodeForCausalLM"],
    )


def sample_batch(data: np.ndarray, batch: int, length: int, rng: np.random.Generator, fim_rate: float,
                 tokenizer: Tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (batch, length): random windows of the token stream, each document piece in them
    rewritten as a FIM example at `fim_rate`; targets past a row's end are IGNORE."""
    # FIM adds 4 sentinel ids and encodes three texts apart: a window leaves that room so a middle is not cut off
    take = length + 1 - FIM_SLACK
    inputs = np.full((batch, length), EOS, dtype=np.int64)
    targets = np.full((batch, length), IGNORE, dtype=np.int64)
    for row in range(batch):
        start = int(rng.integers(0, len(data) - take - 1))
        window = data[start : start + take].astype(np.int64)
        pieces, prev = [], 0
        for end in [*np.flatnonzero(window == EOS).tolist(), len(window)]:
            doc = window[prev:end]
            if len(doc) >= MIN_FIM_TOKENS and rng.random() < fim_rate:
                pieces.append(np.asarray(fim_piece(tokenizer, doc, rng), dtype=np.int64))  # ends with EOS
            else:
                pieces.append(window[prev : min(end + 1, len(window))])  # with its EOS, if the window has it
            prev = end + 1
        ids = np.concatenate(pieces)[: length + 1]
        n = len(ids) - 1
        inputs[row, :n], targets[row, :n] = ids[:-1], ids[1:]
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def train_step(model: GPTBigCodeForCausalLM, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
               targets: torch.Tensor, autocast_bf16: bool) -> float:
    """One optimizer step on a batch; returns the loss (nats/token)."""
    with torch.autocast(device_type=inputs.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
        logits = model(inputs)
    loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def use_bf16(choice: str, device: str) -> bool:
    """--bf16 auto: autocast to bfloat16 where the hardware multiplies it (a CUDA GPU with bf16, a CPU with
    AVX-512 BF16 or AMX); elsewhere it is emulated and slower than float32."""
    if choice != "auto":
        return choice == "on"
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return device == "cpu" and cpu_multiplies_bf16()


def make_optimizer(model: GPTBigCodeForCausalLM, lr: float) -> torch.optim.AdamW:
    """AdamW, weight decay 0.1 on matrices only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95))


def load_init(model: GPTBigCodeForCausalLM, directory: Path) -> None:
    """Start from a checkpoint's weights (half precision upcast, position embeddings cut to this context)."""
    from safetensors.torch import load_file

    state = {k: v.float() for k, v in load_file(str(directory / "model.safetensors")).items()}
    wpe = "transformer.wpe.weight"
    state[wpe] = state[wpe][: model.config.n_positions]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise SystemExit(f"{directory} does not fit this shape: missing {missing}, unexpected {unexpected}")
    model.tie_weights()


@torch.no_grad()
def evaluate(model: GPTBigCodeForCausalLM, data: np.ndarray, length: int, device: str, max_tokens: int = 200_000) -> float:
    """Mean next-token loss (nats) on consecutive windows of held-out data, no FIM."""
    model.eval()
    total, count = 0.0, 0
    n = min(len(data) - 1, max_tokens)
    for start in range(0, n - length, length):
        window = torch.from_numpy(data[start : start + length + 1].astype(np.int64)).unsqueeze(0).to(device)
        logits = model(window[:, :-1])
        total += F.cross_entropy(logits[0].float(), window[0, 1:], reduction="sum").item()
        count += length
    model.train()
    return total / max(count, 1)


def export(model: GPTBigCodeForCausalLM, config: GPTBigCodeConfig, tokenizer_dir: Path, out: Path, meta: dict) -> None:
    """Write the shipped checkpoint atomically: config.json, bfloat16 model.safetensors, tokenizer files, manifest."""
    from safetensors.torch import save_file

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config.torch_dtype = "bfloat16"
    config.save(tmp)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, tmp / name)
    (tmp / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    record_hashes(tmp, {"source": "bundled", "name": out.name})  # what `bigcode models verify` checks
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def save_state(path: Path, model: GPTBigCodeForCausalLM, optimizer: torch.optim.Optimizer, progress: dict,
               rng: np.random.Generator) -> None:
    """Everything a rerun needs to continue exactly here, written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), **progress,
                "rng": rng.bit_generator.state}, tmp)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "lm")
    parser.add_argument("--tokenizer", type=Path, default=ROOT / "bigcode_cli" / "bundled" / "bigcode-tiny")
    parser.add_argument("--out", type=Path, default=ROOT / "bigcode_cli" / "bundled" / "bigcode-tiny")
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "lm")
    parser.add_argument("--init", type=Path, default=None, help="start from this checkpoint's weights (no saved state)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--minutes", type=float, default=75.0, help="training time of the whole schedule")
    parser.add_argument("--segment-minutes", type=float, default=0.0, help="end this run (state saved) after this much")
    parser.add_argument("--steps", type=int, default=100_000, help="stop after this many steps")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256, help="training length, also the model's context")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=200, help="steps of linear warm-up")
    parser.add_argument("--fim-rate", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="autocast matmuls to bfloat16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--export-only", action="store_true", help="write the checkpoint from the saved state, no training")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = Tokenizer.from_dir(args.tokenizer)
    train = np.memmap(args.data / "train.bin", dtype=np.uint16, mode="r")
    heldout = np.memmap(args.data / "heldout.bin", dtype=np.uint16, mode="r")
    config = model_config(tokenizer.vocab_size, args.length)
    torch.manual_seed(args.seed)
    model = GPTBigCodeForCausalLM(config)
    model.init_weights()
    model.set_backend(BACKENDS["sdpa"])
    model.to(args.device).train()
    optimizer = make_optimizer(model, args.lr)
    args.run.mkdir(parents=True, exist_ok=True)
    state_path = args.run / "state.pt"
    progress = {"step": 0, "trained_s": 0.0, "tokens": 0, "history": [], "init": None}
    rng = np.random.default_rng(args.seed)
    if state_path.exists():
        saved = torch.load(state_path, map_location=args.device, weights_only=False)
        model.load_state_dict(saved["model"])
        model.tie_weights()
        optimizer.load_state_dict(saved["optimizer"])
        progress = {k: saved[k] for k in progress}
        rng.bit_generator.state = saved["rng"]
        print(f"resumed at step {progress['step']} ({progress['trained_s'] / 60:.1f} min trained)", flush=True)
    elif args.init is not None:
        load_init(model, args.init)
        init_meta = args.init / "training.json"
        progress["init"] = {"from": args.init.name, **({k: v for k, v in json.loads(init_meta.read_text()).items()
                                                        if k != "history"} if init_meta.exists() else {})}
        print(f"starting from the weights of {args.init}", flush=True)
    bf16 = use_bf16(args.bf16, args.device)
    step_model = torch.compile(model) if args.compile else model
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.2f}M parameters, {len(train) / 1e6:.1f}M train tokens, {len(heldout) / 1e6:.2f}M held-out, "
          f"bf16 {bf16}, {torch.get_num_threads()} threads", flush=True)

    budget_s = 0.0 if args.export_only else args.minutes * 60
    segment_end = progress["trained_s"] + (args.segment_minutes * 60 if args.segment_minutes else budget_s)
    last_save = time.time()
    while progress["step"] < args.steps and progress["trained_s"] < min(budget_s, segment_end):
        t0 = time.perf_counter()
        step = progress["step"]
        fraction = progress["trained_s"] / budget_s if args.steps >= 100_000 else step / args.steps
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0))))
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = sample_batch(train, args.batch, args.length, rng, args.fim_rate, tokenizer)
        loss = train_step(step_model, optimizer, inputs.to(args.device), targets.to(args.device), bf16)
        progress["step"] = step = step + 1
        progress["tokens"] += int((targets != IGNORE).sum())
        progress["trained_s"] += time.perf_counter() - t0
        if step % 50 == 0:
            print(f"step {step} loss {loss:.3f} lr {lr:.2e} {progress['tokens'] / 1e6:.2f}M tokens "
                  f"{progress['trained_s'] / 60:.1f} min", flush=True)
        if step % args.eval_every == 0:
            nats = evaluate(model, heldout, args.length, args.device, max_tokens=50_000)
            progress["history"].append({"step": step, "tokens": progress["tokens"], "heldout_loss": nats,
                                        "minutes": progress["trained_s"] / 60})
            print(f"eval step {step}: held-out loss {nats:.3f} nats/token", flush=True)
        if time.time() - last_save > 300:
            save_state(state_path, model, optimizer, progress, rng)
            last_save = time.time()
    if not args.export_only:
        save_state(state_path, model, optimizer, progress, rng)
    nats = evaluate(model, heldout, args.length, args.device, max_tokens=100_000)
    meta = {"steps": progress["step"], "tokens_seen": progress["tokens"],
            "train_minutes": round(progress["trained_s"] / 60, 1), "heldout_loss_nats_per_token": round(nats, 4),
            "parameters": params, "seed": args.seed, "batch": args.batch, "length": args.length, "lr": args.lr,
            "fim_rate": args.fim_rate, "bf16": bf16, "init": progress["init"], "history": progress["history"]}
    model.eval()
    export(model, config, args.tokenizer, args.out, meta)
    print(json.dumps({k: v for k, v in meta.items() if k != "history"}), flush=True)


if __name__ == "__main__":
    main()
