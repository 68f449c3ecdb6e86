"""`surgery finetune`: the Trainer subclass that runs whichever defense the recipe names.

`compute_loss` is the SFT loss and records it; `training_step` hands each micro-step to the defense's
hook (which calls `sft_step`, the Trainer's own step, and may add passes); `log` adds the means of the
defense's metrics since the last log.
"""

from __future__ import annotations

from transformers import Trainer

from .defenses import Defense, Metric
from .distributed import is_ddp, is_main, sync_gradients

DEFENSE_STATE = "defense_state.pt"  # a checkpoint's file for Defense.state_dict()


class DefenseTrainer(Trainer):
    """A Trainer whose micro-step is the defense's `training_step`; with `sft` it is a plain Trainer."""

    def __init__(self, *args, defense: Defense, metrics: tuple[Metric, ...] = (), loss: str = "plain", **kwargs):
        super().__init__(*args, **kwargs)
        self.defense = defense
        self.loss_kind = loss  # "plain" (the model's own), "chunked" or "liger" (train.loss)
        # per-batch mean SFT loss, divided by grad_accum by the Trainer: extra terms are scaled alike
        self.model_accepts_loss_kwargs = False
        keys = ("sft_loss", *(m.key for m in defense.metrics), *(m.key for m in metrics))
        self._metrics: dict[str, list[float]] = {k: [] for k in keys}
        self.tokens = {"train": 0, "reference": 0}
        self.micro_index = -1  # position of the current micro-batch within its optimizer step
        self._micro_step = -1

    def record(self, key: str, value: float) -> None:
        """Log `value` under a registered metric key (the defense's, or the probe's), averaged over the
        logging interval."""
        self._metrics[key].append(value)

    def sft_step(self, model, inputs, num_items_in_batch=None):
        """The Trainer's own micro-step: SFT forward and backward."""
        return super().training_step(model, inputs, num_items_in_batch)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._micro_step != self.state.global_step:
            self._micro_step, self.micro_index = self.state.global_step, 0
        else:
            self.micro_index += 1
        # train mode before any pass a defense runs ahead of the Trainer's own step (which sets it too):
        # the first step of a run, or of a resume, follows the eval-mode sink measurement
        model.train()
        if not is_ddp(model):
            return self.defense.training_step(self, model, inputs, num_items_in_batch)
        # every pass (the SFT one included) runs on the module itself and accumulates locally; the gradients
        # are all-reduced once, when the optimizer is about to step (train.distributed)
        with model.no_sync():
            loss = self.defense.training_step(self, model.module, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:
            sync_gradients(model)
        return loss

    def _save_checkpoint(self, model, trial):
        # the defense's own state beside the weights, before trainer_state.json marks the checkpoint whole
        import os

        import torch
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        state = self.defense.state_dict()
        if state and is_main():
            folder = os.path.join(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            torch.save(state, os.path.join(folder, DEFENSE_STATE))
        super()._save_checkpoint(model, trial)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.loss_kind != "plain" and not return_outputs:
            from .loss import causal_lm_loss

            out = causal_lm_loss(model, inputs, use_liger=self.loss_kind == "liger")
        else:
            out = super().compute_loss(model, inputs, return_outputs=return_outputs)
        if model.training:
            loss = out[0] if return_outputs else out
            self.record("sft_loss", float(loss.detach()))
            self.tokens["train"] += int(inputs["attention_mask"].sum())
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the means of the extra terms since the last one
            for key, values in self._metrics.items():
                if values:  # a metric with no value this interval is left out: trackers take numbers only
                    logs[key] = sum(values) / len(values)
                values.clear()
        super().log(logs, start_time)
