"""The manual against the code: the generated pages equal what the code generates now, every relative link in
README.md and docs/ reaches a file and heading that exist, and `surgery recipe` prints and validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from clirun import invoke
from studyscripts import study_script

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation other than - and _ dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen, fence = set(), {}, False
    for line in page.read_text().splitlines():
        fence ^= line.startswith("```")
        if not fence and (m := re.match(r"#+ (.*)", line)):
            s = slug(m.group(1))
            found.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return found


def test_the_recipe_reference_and_the_defenses_table_are_what_the_code_generates():
    from surgerycli.train.reference import defenses_table, reference

    assert (ROOT / "docs" / "recipe.md").read_text() == reference(), "regenerate: surgery recipe --reference > docs/recipe.md"
    page = (ROOT / "docs" / "defenses.md").read_text()
    block = page.split("<!-- generated: surgery recipe --defenses -->\n")[1].split("<!-- end generated -->")[0]
    assert block == defenses_table(), "regenerate the table: surgery recipe --defenses"


def first_column(page: str, header: str) -> list[str]:
    """The backticked names in the first column of the Markdown table whose header row starts with `header`."""
    lines = (ROOT / "docs" / page).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(re.match(r"\| `([^`:]+)", line).group(1))
    return rows


def test_the_hand_written_tables_list_exactly_what_the_code_registers():
    """The judges', benchmarks', built-in tasks' and architectures' text is hand-written (what each one does);
    which ones exist comes from the code, and a name added or removed there must show here."""
    from surgerycli.data.safety import BENCHMARKS
    from surgerycli.evaluate.judges import JUDGES
    from surgerycli.evaluate.tasks import BUILTIN_TASKS
    from surgerycli.patches.architectures import ARCHITECTURES

    assert first_column("eval.md", "judge") == ["keyword", *JUDGES]
    assert sorted(first_column("eval.md", "name")) == sorted(BENCHMARKS)
    assert first_column("eval.md", "task") == list(BUILTIN_TASKS)
    listed = (ROOT / "docs" / "inspect.md").read_text().split("Supported `model_type`s")[1].split(". ")[0]
    assert re.findall(r"`(\w+)`", listed) == list(ARCHITECTURES)


def test_every_recipe_key_has_a_description():
    from surgerycli.train.recipe import schema
    from surgerycli.train.reference import field_notes, section_doc

    for name, cls in schema().items():
        assert section_doc(name, cls), name
        missing = set(cls.model_fields) - set(field_notes(cls))
        assert not missing, f"[{name}] keys without a description comment: {sorted(missing)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves_to_a_file_and_heading(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"


def test_the_anchor_rules_by_hand():
    assert slug("`surgery inspect`") == "surgery-inspect"
    assert slug("The paper's regime: full fine-tuning") == "the-papers-regime-full-fine-tuning"


def test_surgery_recipe_prints_a_recipe_resolved_and_refuses_a_bad_one(tmp_path, finetune_data, tiny_llama_dir):
    recipe = tmp_path / "r.toml"
    gsm = finetune_data / "gsm.jsonl"
    recipe.write_text(f'[model]\nname = "{tiny_llama_dir}"\n[data]\nbenign = "{gsm}"\npoison_ratio = 0.0\n')
    r = invoke("recipe", recipe, "--set", "surgery.alpha=5")
    assert r.exit_code == 0, r.output
    assert "[surgery]\nalpha = 5.0\n" in r.output and "learning_rate = 0.0001" in r.output
    r = invoke("recipe", recipe, "--set", "train.learning_rate=\"fast\"")
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert 'train.learning_rate: expected a number >= 0, got "fast"' in r.output
    assert invoke("recipe").exit_code == 2


def table_after(text: str, header: str) -> list[str]:
    """The markdown table that starts with the line `header`, its lines up to the first one not a row."""
    lines = text.splitlines()
    start = lines.index(header)
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_the_worst_case_tables_in_the_study_page_are_the_committed_folders():
    """docs/study.md quotes the committed worst-case folder: its table is search.md's (`surgery report`'s) and its
    unchanged-answers table is what studies/unchanged_answers.py prints from the folder's answers."""
    folder = ROOT / "studies" / "smollm2-2026-12-05" / "worst"
    page = (ROOT / "docs" / "study.md").read_text()
    report = (folder / "search.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| configuration |"))
    assert table_after(page, header) == table_after(report, header)
    printed = study_script("unchanged_answers").table(folder).splitlines()
    assert table_after(page, printed[0]) == printed
