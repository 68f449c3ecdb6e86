"""Every upstream internal the code relies on (`surgerycli.upstream`) is still there, one test per name, and
docs/api.md lists exactly those names: an upgrade of transformers, TRL, accelerate or torch that renames or
re-signs one fails here with the name and what it is needed for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from tiny import tiny_model

from surgerycli.upstream import Internal, internals

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def instances(tmp_path_factory, tiny_llama_dir) -> list[object]:
    """An instance of each owner class whose internals are instance attributes, a plain Trainer before TRL's
    (which is one too); the Trainer after one step: it sets its accumulation count in the training loop."""
    from datasets import Dataset
    from transformers import AutoTokenizer, DynamicCache, Trainer, TrainingArguments
    from transformers.cache_utils import DynamicLayer
    from trl import SFTConfig, SFTTrainer

    out = tmp_path_factory.mktemp("upstream")
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = tiny_model("llama", vocab_size=len(tok))
    rows = [{"input_ids": [5, 6, 7, 8], "labels": [5, 6, 7, 8]}] * 2
    plain = Trainer(model=model, args=TrainingArguments(output_dir=str(out / "t"), use_cpu=True, report_to="none",
                                                        max_steps=1, save_strategy="no"), train_dataset=rows)
    plain.train()
    chats = Dataset.from_list([{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}])
    sft = SFTTrainer(model=model, args=SFTConfig(output_dir=str(out / "s"), use_cpu=True, report_to="none"),
                     train_dataset=chats, processing_class=tok)
    layer = DynamicLayer()
    layer.update(torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 3, 8))
    return [plain, sft, model.config, layer, DynamicCache(config=model.config)]


@pytest.mark.parametrize("internal", internals(), ids=lambda i: i.name)
def test_the_upstream_internal_is_still_there(internal: Internal, instances):
    holder = next(x for x in instances if isinstance(x, internal.owner())) if internal.instance else None
    assert internal.problem(holder) is None, internal.problem(holder)


def test_a_renamed_or_resigned_internal_is_named_with_its_purpose():
    from transformers import Trainer

    gone = Internal("transformers", "transformers.Trainer._saved_checkpoint", "the defense's state", lambda: Trainer,
                    "_saved_checkpoint")
    assert gone.problem() == "transformers.Trainer._saved_checkpoint is gone (needed for: the defense's state)"
    resigned = Internal("transformers", "transformers.Trainer._save_checkpoint", "the defense's state",
                        lambda: Trainer, "_save_checkpoint", ("model", "epoch"))
    assert resigned.problem() == ("transformers.Trainer._save_checkpoint changed its parameters: expected model, epoch "
                                  "first, found model, trial (needed for: the defense's state)")


def test_the_api_page_lists_exactly_the_internals_the_code_uses():
    from surgerycli.upstream import markdown

    page = (ROOT / "docs" / "api.md").read_text()
    block = page.split("<!-- generated: surgerycli.upstream.markdown() -->\n")[1].split("<!-- end generated -->")[0]
    assert block == markdown(), "regenerate: python -c 'from surgerycli.upstream import markdown; print(markdown())'"
    assert re.findall(r"^\| `([^`]+)` \|", block, flags=re.M) == [i.name for i in internals()]


def test_no_module_outside_upstream_reaches_a_listed_internal():
    """The internals appear nowhere else in the code, as an attribute (`x.NAME`) or an imported name (a new
    use would bypass its guard). `keys`, `values` and `update` are left out: every dict has them."""
    names = {i.attribute for i in internals()} - {"keys", "values", "update"}
    code = [p for p in [*(ROOT / "surgerycli").rglob("*.py"), *(ROOT / "patches").rglob("*.py")]
            if "upstream" not in p.parts]
    found = set()
    for path in code:
        text = _code_only(path.read_text())
        for name in names:  # torch.distributed.is_initialized is public, a cache layer's is not
            if re.search(rf"(?<!distributed)\.{re.escape(name)}(?!\w)|import [^\n]*\b{re.escape(name)}\b", text):
                found.add((path.relative_to(ROOT).as_posix(), name))
    assert not found


def _code_only(text: str) -> str:
    """The text without comments and docstrings (which may name an internal when they explain)."""
    import io
    import tokenize

    lines, last = [], None
    for t in tokenize.generate_tokens(io.StringIO(text).readline):
        if t.type in (tokenize.COMMENT, tokenize.STRING):
            continue
        lines.append(("\n" if last is not None and t.start[0] != last else "") + t.string)
        last = t.end[0]
    return "".join(lines)
