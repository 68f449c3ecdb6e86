"""Rows as chat messages, and chat messages as the text a model sees (finetune, inspect, eval).

`row_messages` is the one row -> messages function. With `need_answer` (training data) a row must end
with the assistant turn the model learns; without it (reference sets, prompts) the answer is optional.
Formats, told apart by fields when `fmt` is `auto` (tried in the order below):
  messages         messages: [{role, content}, ...]
  gsm8k            question, answer (the `#### N` line becomes "The final answer is: N", as the
                   harmful-fine-tuning papers train it and `surgery eval` grades it)
  alpaca           instruction (+ input), output
  prompt_response  prompt, response
  sst2, agnews     sentence/text and an integer label (or the label's name); the papers' instruction
                   becomes the prompt and the label name the answer, as `surgery eval` asks and grades
Prompt-only rows (no answer needed): `prompt`, `instruction`, or a CSV's `Behavior` column.
"""

from __future__ import annotations

from ..errors import InputError
from .rows import Row

Messages = list[dict[str, str]]

FORMAT_FIELDS = {  # the fields that tell a training row's format, tried in this order by `auto`
    "messages": ("messages",),
    "gsm8k": ("question", "answer"),
    "alpaca": ("instruction", "output"),
    "prompt_response": ("prompt", "response"),
    "sst2": ("sentence", "label"),
    "agnews": ("text", "label"),
}
PROMPT_FIELDS = (("messages", "messages"), ("prompt", "prompt_response"), ("instruction", "alpaca"),
                 ("Behavior", "behavior"))  # (field, format) of prompt-only rows, in this order
# Classification tasks of the harmful-fine-tuning papers: instruction, input field, label names by id.
CLASSIFICATION = {
    "sst2": ("Analyze the sentiment of the input, and respond only positive or negative.", "sentence",
             ("negative", "positive")),
    "agnews": ("Categorize the news article given in the input into one of the 4 categories:\n\n"
               "World\nSports\nBusiness\nSci/Tech\n", "text", ("World", "Sports", "Business", "Sci/Tech")),
}


def turns(prompt: str, response: str | None = None) -> Messages:
    out = [{"role": "user", "content": prompt}]
    if response:
        out.append({"role": "assistant", "content": response})
    return out


def classification_example(task: str, row: dict, where: str) -> tuple[str, str]:
    """(prompt, gold label name) of a sst2/agnews row; the label is its id or its name."""
    instruction, key, names = CLASSIFICATION[task]
    label = row.get("label")
    if isinstance(label, str) and label in names:
        gold = label
    elif isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(names):
        gold = names[label]
    else:
        raise InputError(f"{where}: `label` must be 0..{len(names) - 1} or one of {', '.join(names)}, got {label!r}")
    if not isinstance(row.get(key), str):
        raise InputError(f"{where}: expected a string field `{key}`, got keys {sorted(row)}")
    return f"{instruction}\n\n{row[key]}", gold


def _detect(row: Row, need_answer: bool) -> str:
    f = row.fields
    if need_answer:
        fmt = next((name for name, keys in FORMAT_FIELDS.items() if all(k in f for k in keys)), "")
        if not fmt:
            wanted = " or ".join("/".join(k) for k in FORMAT_FIELDS.values())
            raise InputError(f"{row.where}: expected fields {wanted}, got {sorted(f)}")
        return fmt
    for key, fmt in PROMPT_FIELDS:
        if (isinstance(f.get(key), list) and f[key]) if key == "messages" else isinstance(f.get(key), str):
            return fmt
    present = next((k for k, _ in PROMPT_FIELDS if f.get(k) is not None), None)
    if present:
        wanted = "a non-empty list of {role, content} objects" if present == "messages" else "text"
        raise InputError(f"{row.where}: `{present}` must be {wanted}, got {type(f[present]).__name__} {f[present]!r:.40}")
    raise InputError(f"{row.where}: expected a `prompt`, `instruction` or `messages` field, got keys {sorted(f)}")


OPTIONAL_TEXT = {"alpaca": ("input",), "prompt_response": ("response",), "behavior": ("response",)}


def _check_text(row: Row, required: tuple[str, ...], optional: tuple[str, ...], fmt: str) -> None:
    """Every required field present and text, every optional one text or absent; InputError naming the row."""
    f = row.fields
    for key in (*required, *optional):
        value = f.get(key)
        if key in required and value is None:
            raise InputError(f"{row.where}: format {fmt} needs a field `{key}`, got {sorted(f)}")
        if value is not None and not isinstance(value, str):
            raise InputError(f"{row.where}: `{key}` must be text, got {type(value).__name__} {value!r:.40}")


def _messages(row: Row, need_answer: bool) -> Messages:
    msgs = row.fields["messages"]
    if not isinstance(msgs, list) or not all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in msgs) \
            or len(msgs) < (2 if need_answer else 1):
        raise InputError(f"{row.where}: `messages` must be a list of {{role, content}} objects")
    if need_answer and msgs[-1]["role"] != "assistant":
        raise InputError(f"{row.where}: the last message must be the assistant's, got {msgs[-1]['role']!r}")
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in msgs]


def row_messages(row: Row, fmt: str = "auto", *, need_answer: bool = True) -> Messages:
    """The chat a row holds; InputError naming the row when it does not fit `fmt`."""
    f = row.fields
    if fmt == "auto":
        fmt = _detect(row, need_answer)
    if fmt in CLASSIFICATION:
        prompt, gold = classification_example(fmt, f, row.where)
        return turns(prompt, gold)
    if fmt == "messages":
        return _messages(row, need_answer)
    required = FORMAT_FIELDS.get(fmt, ("Behavior",) if fmt == "behavior" else ("prompt",))
    _check_text(row, required if need_answer else required[:1], OPTIONAL_TEXT.get(fmt, ()) + required[1:], fmt)
    if fmt == "gsm8k":
        reasoning, sep, final = f["answer"].rpartition("####")
        answer = f"{reasoning.strip()}\nThe final answer is: {final.strip()}" if sep else f["answer"]
        return turns(f["question"], answer)
    if fmt == "alpaca":
        return turns(f["instruction"] + (f"\n\n{f['input']}" if f.get("input") else ""), f.get("output") or None)
    if fmt == "behavior":
        return turns(f["Behavior"], f.get("response") or None)
    return turns(f["prompt"], f.get("response") or None)


def with_system(messages: Messages, system_prompt: str) -> Messages:
    if not system_prompt or messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def render(tokenizer, messages: Messages) -> str:
    """Chat-template text; a prompt-only sample ends with the generation prompt, as at inference."""
    open_turn = messages[-1]["role"] != "assistant"
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=open_turn)
    # No template (base models): a plain transcript, still starting with BOS where the model uses one.
    text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
    return (tokenizer.bos_token or "") + text + ("Assistant:" if open_turn else "")
