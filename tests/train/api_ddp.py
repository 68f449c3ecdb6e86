"""A run of the Python API for test_hosting's DDP test: `python api_ddp.py MODEL REFS_DIR OUT BATCH` (one process,
or each rank under torchrun). Equal-length rows, one-row reference sets, no dropout, plain SGD without clipping:
a gradient counted twice, or left unsynchronized on a rank, changes the weights."""

import sys

from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, set_seed

from surgerycli import Surgery, with_defense
from surgerycli.data.chat import turns
from surgerycli.data.finetune import pad_batch, tokenize_example

model_dir, refs, out, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tok = AutoTokenizer.from_pretrained(model_dir)
rows = [tokenize_example(tok, turns(f"What is {a} + 11?", f"{a} + 11 = {a + 11}"), 64) for a in range(20, 36)]
assert len({len(r["input_ids"]) for r in rows}) == 1  # equal lengths: each rank's token mean is a share of the global
set_seed(0)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                       LoraConfig(r=4, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
args = TrainingArguments(output_dir=out, use_cpu=True, per_device_train_batch_size=batch, max_steps=4, learning_rate=0.05,
                         optim="sgd", max_grad_norm=0.0, logging_steps=1, report_to="none", save_strategy="no", seed=0)
trainer = with_defense(Trainer)(model=model, args=args, train_dataset=rows, processing_class=tok,
                                data_collator=lambda b: pad_batch(b, tok.pad_token_id),
                                defense=Surgery(alpha=50.0, harmful_reference=f"{refs}/harm.jsonl",
                                                harmless_reference=f"{refs}/safe.jsonl"))
trainer.train()
trainer.save_model(out)
