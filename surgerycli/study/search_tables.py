"""`surgery search` and `surgery report`: a search's worst-case table (printed, and in search.md and report.html)
from its record, search.json, so that a report of a committed search folder prints the same figures."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..report.eval import markdown_table

HEADER = ["configuration", "worst-case HS", "its settings", "FA there (floor)", "top-3 mean", "trials to break",
          "under floor", "confirmed HS (seeds)"]


def _fmt(x: float | None, ci: list[float] | None = None) -> str:
    return "-" if x is None else f"{x:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def settings(params: dict) -> str:
    return ", ".join(f"{k.rpartition('.')[2]} {v:.3g}" if isinstance(v, float) else f"{k.rpartition('.')[2]} {v}"
                     for k, v in params.items())


def _confirmed(c: dict | None) -> str:
    if not c or not c["hs"]:
        return "-"
    hs = c["hs"]
    sd = f" ± {hs['std']:.1f}" if hs["std"] is not None else ""  # one seed: no sd
    return f"{hs['mean']:.1f}{sd} [{hs['ci95'][0]:.1f}, {hs['ci95'][1]:.1f}] ({','.join(map(str, c['seeds']))})"


def results_table(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, a row per configuration) of search.json's `configurations`."""
    rows = []
    for r in results:
        s, w = r["summary"], r["summary"]["worst"]
        rows.append([r["label"], _fmt(w["harmful_score"], w["hs_ci95"]) if w else "none met the floor",
                     settings(w["params"]) if w else "-",
                     f"{_fmt(w['accuracy']) if w else '-'} ({r['floor_fa']:.1f})", _fmt(s["top3_mean"]),
                     f"{s['trials_to_break']} of {s['trials']}" if s["trials_to_break"] else f"none of {s['trials']}",
                     f"{100 * s['under_floor']:.0f}%" if s["under_floor"] is not None else "-",
                     _confirmed(r.get("confirm"))])
    return HEADER, rows


def trials_table(result: dict) -> tuple[list[str], list[list[str]]]:
    """(header, a row per trial) of one configuration of search.json."""
    return (["trial", "settings", "HS", "FA", "meets the floor"],
            [[str(t["trial"]), settings(t["params"]), _fmt(t["harmful_score"]), _fmt(t["accuracy"]),
              "yes" if t["feasible"] else "no"] for t in result["trials"]])


def print_results(record: dict, console: Console) -> None:
    """The worst-case table of a search record (search.json's content)."""
    table = Table(title=escape(f"Worst case per configuration: HS judged by {record['judge']} (higher is worse for the "
                        f"defense), [95% Wilson interval]; floor {record['floor']:g} x the accuracy before the attack"))
    header, rows = results_table(record["configurations"])
    for col in header:
        table.add_column(escape(col), overflow="fold")
    for row in rows:
        table.add_row(*map(escape, row))  # text, never markup
    console.print(table)


def _trial_counts(record: dict) -> str:
    """"N trials per configuration", or each configuration's completed trials where they differ (a search
    written up before every study reached N, or studies resumed with another N)."""
    counts = [r["summary"]["trials"] for r in record["configurations"]]
    if all(n == record["trials"] for n in counts):
        return f"{record['trials']} trials per configuration"
    return "completed trials: " + ", ".join(f"{r['label']} {n}" for r, n in zip(record["configurations"], counts))


def search_md(record: dict) -> str:
    """search.md of a search record (search.json's content)."""
    md = (f"# surgery search\n\nRecipe `{record['recipe']}`; the attacker's space: {'; '.join(record['space'])}; "
          f"{_trial_counts(record)} (seed {record['seed']}); HS judged by `{record['judge']}`; "
          f"a trial meets the floor when its task accuracy is at least {record['floor']:g} x that of the model the "
          f"attack starts from (in brackets under FA); a trial breaks the defense at HS >= {record['break_at']:g}."
          f"\n\n" + markdown_table(*results_table(record["configurations"])))
    for r in record["configurations"]:
        md += f"\n## {r['label']}\n\n" + markdown_table(*trials_table(r))
    return md
