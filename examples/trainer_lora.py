"""Surgery inside a plain transformers Trainer, with LoRA:
`python examples/trainer_lora.py MODEL DATA.jsonl OUT [MAX_STEPS]`.

DATA.jsonl holds chat rows ({"messages": [...]}), tokenized here with the loss on the answer only.
"""
import sys

from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

from surgerycli import Surgery, with_defense
from surgerycli.data.finetune import read_examples, tokenize_example

model_name, data, out = sys.argv[1:4]
tokenizer = AutoTokenizer.from_pretrained(model_name)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_name), LoraConfig(r=16, task_type="CAUSAL_LM"))
rows = [r for chat in read_examples(data) if (r := tokenize_example(tokenizer, chat, max_length=512))]
args = TrainingArguments(output_dir=out, max_steps=int(sys.argv[4]) if len(sys.argv) > 4 else -1, learning_rate=1e-4,
                         per_device_train_batch_size=4, logging_steps=1, report_to="none")
trainer = with_defense(Trainer)(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                                data_collator=DataCollatorForSeq2Seq(tokenizer), defense=Surgery(alpha=300))
trainer.train()
trainer.save_model(out)
