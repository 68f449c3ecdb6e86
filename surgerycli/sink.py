"""The sink measurement behind `surgery inspect` and `surgery finetune` (sink_before/after.json).

Model math only: no files, no printing. `measure_set` runs batched forwards in sink mode and returns
(N, L, H) statistics; `summarize` turns a harmful and a harmless set of them into set means, divergence,
sign counts and (`bootstrap_ci`) each head's 95% bootstrap interval of d with the counts of heads whose
interval lies above / below 0; `measure_refsets` does both sets under a progress bar and `result_record` gives the
`surgery inspect --json` schema.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from surgerycli.patches import measure_sinks, set_sink_mode

from .data.chat import Messages, render
from .data.finetune import pad_batch
from .data.refsets import RefSet
from .errors import InputError


def encode(tokenizer, samples: list[Messages], max_length: int) -> list[list[int]]:
    """Token ids of each rendered sample, truncated on the right so the sink at the start survives."""
    texts = [render(tokenizer, s) for s in samples]
    # The chat template already holds BOS where the model wants one; don't add a second.
    enc = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)
    return enc["input_ids"]


@torch.no_grad()
def measure_set(
    model: torch.nn.Module,
    token_ids: list[list[int]],
    *,
    pad_id: int,
    batch_size: int,
    sink_position: int,
    device: torch.device,
    on_batch: Callable[[int], None] = lambda n: None,
) -> torch.Tensor:
    """(N, L, H) fp32 sink statistic of every sample, in input order (NaN: no query after the sink)."""
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))  # similar lengths share a batch
    out: list[torch.Tensor] = [torch.empty(0)] * len(token_ids)
    set_sink_mode(model, True)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = pad_batch([{"input_ids": token_ids[i]} for i in idx], pad_id)
            ids, mask = batch["input_ids"], batch["attention_mask"]
            stats = measure_sinks(model, ids.to(device), mask.to(device), sink_position)  # (B, L, H)
            for i, row in zip(idx, stats.cpu()):
                out[i] = row
            on_batch(len(idx))
    finally:
        set_sink_mode(model, False)
    return torch.stack(out)


BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def _valid(x: torch.Tensor) -> torch.Tensor:
    """The samples of an (N, L, H) set that have a statistic (NaN rows: no query after the sink), in fp64."""
    valid = ~torch.isnan(x).any(dim=(1, 2))  # (N,)
    if not valid.any():
        raise ValueError("no sample has a real token after the sink")
    return x[valid].double()


def resample_counts(n: int, resamples: int, generator: torch.Generator) -> torch.Tensor:
    """(B, n) how often each of n samples is drawn in each of B bootstrap resamples of size n."""
    idx = torch.randint(0, n, (resamples, n), generator=generator)  # (B, n)
    ones = torch.ones_like(idx, dtype=torch.float64)
    return torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(1, idx, ones)


def bootstrap_ci(harmful: torch.Tensor, harmless: torch.Tensor, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head 95% percentile bootstrap interval of d = mean(harmful) - mean(harmless): each set is resampled
    with replacement on its own (the sets are independent samples), seeded. (low, high), each (L, H).

    harmful: (N, L, H), harmless: (M, L, H), NaN-free, fp64.
    """
    g = torch.Generator().manual_seed(seed)
    means = []
    for x in (harmful, harmless):
        n = x.shape[0]
        counts = resample_counts(n, resamples, g)  # (B, n)
        means.append(counts @ x.reshape(n, -1) / n)  # (B, L*H): the mean of each resample
    d = (means[0] - means[1]).reshape(resamples, *harmful.shape[1:])  # (B, L, H)
    q = torch.quantile(d, torch.tensor([0.025, 0.975], dtype=d.dtype), dim=0)  # (2, L, H)
    return q[0], q[1]


def summarize(harmful: torch.Tensor, harmless: torch.Tensor, resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Set means (L, H), divergence d = harmful - harmless, the sign counts of d, and (resamples > 0) each
    head's 95% bootstrap interval with the counts of heads whose interval lies entirely above / below 0.

    harmful: (N, L, H), harmless: (M, L, H); samples with no statistic (NaN rows) are left out.
    """
    x_m, x_r = _valid(harmful), _valid(harmless)
    d = x_m.mean(dim=0) - x_r.mean(dim=0)  # (L, H)
    out = {
        "harmful": {"n_samples": x_m.shape[0], "sink": x_m.mean(dim=0).tolist()},
        "harmless": {"n_samples": x_r.shape[0], "sink": x_r.mean(dim=0).tolist()},
        "divergence": d.tolist(),
        "positive_heads": int((d > 0).sum()),
        "negative_heads": int((d < 0).sum()),
    }
    if resamples > 0:
        low, high = bootstrap_ci(x_m, x_r, resamples)
        out |= {"divergence_ci95": {"low": low.tolist(), "high": high.tolist(), "method": "percentile bootstrap",
                                    "resamples": resamples, "seed": BOOTSTRAP_SEED},
                "significant_positive_heads": int((low > 0).sum()),
                "significant_negative_heads": int((high < 0).sum())}
    return out


def measure_refsets(
    model, tokenizer, harm: RefSet, safe: RefSet, *, max_length: int, batch_size: int,
    sink_position: int, device, progress, where: str = "sink_position", resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict:
    """`summarize` of both sets, measured with a progress task each; `where` names the option in errors."""
    stats = {}
    for label, refset in (("harmful", harm), ("harmless", safe)):
        ids = encode(tokenizer, refset.samples, max_length)
        task = progress.add_task(f"{label} set", total=len(ids))
        stats[label] = measure_set(
            model, ids, pad_id=tokenizer.pad_token_id, batch_size=batch_size, sink_position=sink_position,
            device=device, on_batch=lambda n, task=task: progress.advance(task, n),
        )
    try:
        return summarize(stats["harmful"], stats["harmless"], resamples)
    except ValueError as e:
        raise InputError(f"{where} {sink_position}: {e} (texts too short)") from None


def result_record(
    model_name: str, adapter: str | None, sink_position: int, model, harm: RefSet, safe: RefSet, summary: dict
) -> dict:
    """The `surgery inspect --json` schema."""
    cfg = model.config.get_text_config()
    return {
        "model": model_name,
        "adapter": adapter,
        "sink_position": sink_position,
        "num_layers": cfg.num_hidden_layers,
        "num_heads": cfg.num_attention_heads,
        "harmful": {"path": harm.path, **summary["harmful"]},
        "harmless": {"path": safe.path, **summary["harmless"]},
        "divergence": summary["divergence"],
        "positive_heads": summary["positive_heads"],
        "negative_heads": summary["negative_heads"],
        **{k: summary[k] for k in ("divergence_ci95", "significant_positive_heads", "significant_negative_heads")
           if k in summary},
    }
