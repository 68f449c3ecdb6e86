"""Surgery inside TRL's SFTTrainer: `python examples/trl_sft.py MODEL DATA.jsonl OUT [MAX_STEPS]`.

DATA.jsonl holds chat rows ({"messages": [...]}); the reference sets are Surgery's defaults (offline).
"""
import sys

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from surgerycli import Surgery, with_defense

model_name, data, out = sys.argv[1:4]
tokenizer = AutoTokenizer.from_pretrained(model_name)
model = AutoModelForCausalLM.from_pretrained(model_name)
dataset = load_dataset("json", data_files=data, split="train")
args = SFTConfig(output_dir=out, max_steps=int(sys.argv[4]) if len(sys.argv) > 4 else -1, learning_rate=5e-6,
                 per_device_train_batch_size=4, logging_steps=1, bf16=torch.cuda.is_available(), report_to="none")
trainer = with_defense(SFTTrainer)(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                   defense=Surgery(alpha=300))
trainer.train()
trainer.save_model(out)
