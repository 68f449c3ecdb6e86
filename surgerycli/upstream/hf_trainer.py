"""transformers' Trainer and TRL's SFTTrainer: the internals `with_defense` and `surgery finetune` rely on.

`TrainerHooks` sits before the host Trainer in the MRO (`train.hosting.DefenseMixin` derives from it) and
turns two overridden internals into hooks of our own: `before_checkpoint_saved(folder)`, called before the
Trainer writes a checkpoint (so the defense's state is in it before trainer_state.json marks it whole), and
`accelerator_ready()`, called right after the Trainer creates its Accelerator. The functions read or set
what the Trainer keeps on the instance.
"""

from __future__ import annotations

from pathlib import Path

from .internal import Internal


def _trainer():
    from transformers import Trainer

    return Trainer


def _sft_trainer():
    from trl import SFTTrainer

    return SFTTrainer


INTERNALS = (
    Internal("transformers", "transformers.Trainer._save_checkpoint", "write the defense's state into a checkpoint "
             "before trainer_state.json marks it whole", _trainer, "_save_checkpoint", ("model", "trial")),
    Internal("transformers", "transformers.Trainer._prepare_inputs", "put a defense's own batch on the device as "
             "the host puts its own", _trainer, "_prepare_inputs", ("inputs",)),
    Internal("transformers", "transformers.Trainer.create_accelerator_and_postprocess", "switch FSDP2 on under "
             "torchrun on CPU right after the Accelerator exists", _trainer, "create_accelerator_and_postprocess", ()),
    Internal("transformers", "transformers.Trainer.compute_loss_context_manager", "open the host's forward "
             "context (autocast) around a defense's extra forwards", _trainer, "compute_loss_context_manager", ()),
    Internal("transformers", "transformers.Trainer.is_fsdp_enabled", "know whether the host shards the model "
             "(each rank then saves its own defense state)", _trainer, "is_fsdp_enabled", instance=True),
    Internal("transformers", "transformers.Trainer.current_gradient_accumulation_steps", "scale a defense's extra "
             "terms by the micro-batches of this optimizer step", _trainer, "current_gradient_accumulation_steps",
             instance=True),
    Internal("transformers", "transformers.Trainer.model_accepts_loss_kwargs", "make `surgery finetune`'s SFT "
             "loss a per-batch mean, as its extra terms are scaled", _trainer, "model_accepts_loss_kwargs",
             instance=True),
    Internal("trl", "trl.SFTTrainer._metrics", "log a defense's metrics through TRL's own store, which TRL "
             "averages and clears at each log", _sft_trainer, "_metrics", instance=True),
)


class TrainerHooks:
    """The two overridden Trainer internals as hooks of our own (see the module's docstring)."""

    def before_checkpoint_saved(self, folder: Path) -> None:
        pass

    def accelerator_ready(self) -> None:
        pass

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        self.before_checkpoint_saved(Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        super()._save_checkpoint(model, trial)

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        self.accelerator_ready()


def prepare_inputs(trainer, batch: dict) -> dict:
    """`batch` on the model's device, as the Trainer moves its own."""
    return trainer._prepare_inputs(batch)


def loss_context(trainer):
    """The Trainer's forward context (autocast, activation offloading)."""
    return trainer.compute_loss_context_manager()


def accumulation_steps(trainer) -> int:
    """Micro-batches in the optimizer step under way (the last step of an epoch may have fewer)."""
    return trainer.current_gradient_accumulation_steps


def fsdp_enabled(trainer) -> bool:
    return bool(trainer.is_fsdp_enabled)


def enable_fsdp(trainer) -> None:
    """Tell the Trainer it shards the model (set where accelerate was switched to FSDP2 by hand)."""
    trainer.is_fsdp_enabled = True


def loss_per_batch(trainer) -> None:
    """The model's loss as a per-batch mean (no `num_items_in_batch` normalization across micro-batches)."""
    trainer.model_accepts_loss_kwargs = False


def trl_metrics(trainer) -> dict | None:
    """TRL's store of training metrics (key -> values since the last log), or None for a plain Trainer."""
    host = getattr(trainer, "_metrics", None)
    return host["train"] if isinstance(host, dict) and isinstance(host.get("train"), dict) else None
