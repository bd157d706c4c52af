"""Train the bundled `bigcode-tiny` code LM: next-token prediction plus fill-in-the-middle at rate 0.5.

Recipe (after scripts/bundled/corpus.py, tokenizer.py and pretokenize.py):

    python scripts/bundled/train_lm.py --minutes 75            # this 2-core CPU
    python scripts/bundled/train_lm.py --device cuda --steps 20000 --batch 64   # a GPU, same recipe

It trains our own model (bigcode_cli.model.gpt_bigcode), checkpoints to runs/lm/state.pt every few minutes
(rerunning the same command resumes from it), and writes the shipped Hugging Face checkpoint
(config.json, model.safetensors in bfloat16, tokenizer files) to bigcode_cli/bundled/bigcode-tiny/.
FIM follows the SantaCoder paper: each document is, with probability 0.5, cut at two random points
into prefix/middle/suffix and rearranged as PSM or SPM (half each):
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
from bigcode_cli.store.writing import record_hashes

ROOT = Path(__file__).resolve().parents[2]
EOS, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX = 0, 1, 2, 3


def model_config(vocab_size: int, context: int) -> GPTBigCodeConfig:
    """The shipped model's shape: small enough to train on a laptop CPU in about an hour."""
    return GPTBigCodeConfig(
        vocab_size=vocab_size, n_positions=context, n_embd=256, n_layer=4, n_head=4, n_inner=1024,
        multi_query=True, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=None,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, architectures=["GPTBigCodeForCausalLM"],
    )


def fim_transform(doc: np.ndarray, rng: np.random.Generator, rate: float) -> np.ndarray:
    """One document (without its EOS) rearranged for fill-in-the-middle with probability `rate`."""
    if len(doc) < 3 or rng.random() >= rate:
        return doc
    a, b = sorted(rng.integers(0, len(doc) + 1, size=2))
    prefix, middle, suffix = doc[:a], doc[a:b], doc[b:]
    if rng.random() < 0.5:
        parts = [[FIM_PREFIX], prefix, [FIM_SUFFIX], suffix, [FIM_MIDDLE], middle]
    else:
        parts = [[FIM_PREFIX, FIM_SUFFIX], suffix, [FIM_MIDDLE], prefix, middle]
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def sample_batch(data: np.ndarray, batch: int, length: int, rng: np.random.Generator, fim_rate: float) -> torch.Tensor:
    """`batch` windows of length+1 tokens; every complete document inside a window is FIM-transformed at `fim_rate`."""
    rows = []
    for _ in range(batch):
        start = int(rng.integers(0, len(data) - length - 2))
        window = data[start : start + length + 1].astype(np.int64)
        ends = np.flatnonzero(window == EOS)
        pieces, prev = [], 0
        for end in list(ends) + [len(window)]:
            doc = window[prev:end]
            pieces.append(fim_transform(doc, rng, fim_rate) if end < len(window) else doc)
            if end < len(window):
                pieces.append(np.asarray([EOS], dtype=np.int64))
            prev = end + 1
        row = np.concatenate(pieces)[: length + 1]
        if len(row) < length + 1:
            row = np.concatenate([row, window[len(row) :]])
        rows.append(row)
    return torch.from_numpy(np.stack(rows))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "lm")
    parser.add_argument("--tokenizer", type=Path, default=ROOT / "bigcode_cli" / "bundled" / "bigcode-tiny")
    parser.add_argument("--out", type=Path, default=ROOT / "bigcode_cli" / "bundled" / "bigcode-tiny")
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "lm")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--minutes", type=float, default=75.0, help="stop after this much training time")
    parser.add_argument("--steps", type=int, default=100_000, help="stop after this many steps")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--context", type=int, default=1024, help="n_positions of the shipped model")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--fim-rate", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--bf16", action="store_true", help="autocast matmuls to bfloat16")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--export-only", action="store_true", help="write the checkpoint from the saved state, no training")
    args = parser.parse_args()

    tokenizer_json = json.loads((args.tokenizer / "tokenizer.json").read_text())
    vocab_size = len(tokenizer_json["model"]["vocab"]) + sum(
        1 for t in tokenizer_json.get("added_tokens", []) if t["content"] not in tokenizer_json["model"]["vocab"]
    )
    train = np.memmap(args.data / "train.bin", dtype=np.uint16, mode="r")
    heldout = np.memmap(args.data / "heldout.bin", dtype=np.uint16, mode="r")
    config = model_config(vocab_size, args.context)
    torch.manual_seed(args.seed)
    model = GPTBigCodeForCausalLM(config)
    model.init_weights()
    model.set_backend(BACKENDS["sdpa"])
    model.to(args.device).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95))
    args.run.mkdir(parents=True, exist_ok=True)
    state_path = args.run / "state.pt"
    step, trained_s, history = 0, 0.0, []
    rng = np.random.default_rng(args.seed)
    if state_path.exists():
        saved = torch.load(state_path, map_location=args.device, weights_only=False)
        model.load_state_dict(saved["model"])
        model.tie_weights()
        optimizer.load_state_dict(saved["optimizer"])
        step, trained_s, history = saved["step"], saved["trained_s"], saved["history"]
        rng.bit_generator.state = saved["rng"]
        print(f"resumed at step {step} ({trained_s / 60:.1f} min trained)", flush=True)
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.2f}M parameters, {len(train) / 1e6:.1f}M train tokens, {len(heldout) / 1e6:.2f}M held-out",
          flush=True)

    budget_s = 0.0 if args.export_only else args.minutes * 60
    warmup = 200
    total_steps_guess = max(args.steps if args.steps < 100_000 else 0, 1)
    last_save = time.time()
    tokens_per_step = args.batch * args.length
    while step < args.steps and trained_s < budget_s:
        t0 = time.perf_counter()
        progress = trained_s / budget_s if args.steps >= 100_000 else step / total_steps_guess
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = sample_batch(train, args.batch, args.length, rng, args.fim_rate).to(args.device)
        with torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        trained_s += time.perf_counter() - t0
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f} lr {lr:.2e} {tokens_per_step * step / trained_s:.0f} tok/s "
                  f"{trained_s / 60:.1f} min", flush=True)
        if step % args.eval_every == 0:
            nats = evaluate(model, heldout, args.length, args.device, max_tokens=50_000)
            history.append({"step": step, "heldout_loss": nats, "minutes": trained_s / 60})
            print(f"eval step {step}: held-out loss {nats:.3f} nats/token", flush=True)
        if time.time() - last_save > 300:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "trained_s": trained_s, "history": history, "rng": rng.bit_generator.state}, state_path)
            last_save = time.time()
    if not args.export_only:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "trained_s": trained_s, "history": history, "rng": rng.bit_generator.state}, state_path)
    nats = evaluate(model, heldout, args.length, args.device, max_tokens=100_000)
    meta = {"steps": step, "tokens_seen": step * tokens_per_step, "train_minutes": round(trained_s / 60, 1),
            "heldout_loss_nats_per_token": round(nats, 4), "parameters": params, "seed": args.seed,
            "batch": args.batch, "length": args.length, "lr": args.lr, "fim_rate": args.fim_rate,
            "history": history}
    model.eval()
    export(model, config, args.tokenizer, args.out, meta)
    print(json.dumps({k: v for k, v in meta.items() if k != "history"}), flush=True)


if __name__ == "__main__":
    main()
