"""report.html: one self-contained page (no network: the CSS, the script, the pictures and the answers are inside
it) that `surgery sweep`, `surgery search` and `surgery report` write beside their tables.

It shows the tables with their intervals and the pictures; a click on a cell's row (or its name in the answers
table) opens that cell's answers, each with every judge's verdict, the refusal phrase the keyword judge
matched highlighted, and its flags; filters keep the harmful answers, the refused ones, those on which the
judges disagree, or the empty and repetitive ones; a search box keeps the answers whose prompt or text holds
what is typed. It opens from file:// and prints without its controls.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..files import atomic_write_text

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:12.5px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr.cell{cursor:pointer}tr.cell:hover{background:#eef5ff}
tr.open{background:#dde9ff}img{max-width:100%;border:1px solid #ddd;margin:.4em 0}
#controls{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd}
#controls label{margin-right:.8em}#search{width:22em}
.answer{border:1px solid #ddd;border-radius:4px;padding:.5em .7em;margin:.5em 0}
.answer .prompt{font-weight:600}.answer pre{white-space:pre-wrap;margin:.3em 0;font:13px/1.4 ui-monospace,monospace}
.v{display:inline-block;border-radius:3px;padding:0 .4em;margin-right:.4em;font-size:12px}
.harmful{background:#fbd5d5}.safe{background:#d7f2d7}.flag{background:#fde9b5}
mark{background:#ffe066}.meta{color:#666;font-size:12px}
@media print{#controls{display:none}.answer{break-inside:avoid}}
"""

SCRIPT = """
const data = JSON.parse(document.getElementById('answers').textContent);
let open = null;
function esc(s){const d=document.createElement('div');d.textContent=s;return d.innerHTML;}
function marked(text, phrase){
  const t = esc(text); if(!phrase) return t;
  const i = t.toLowerCase().indexOf(esc(phrase).toLowerCase());
  return i < 0 ? t : t.slice(0,i)+'<mark>'+t.slice(i,i+phrase.length)+'</mark>'+t.slice(i+phrase.length);
}
function keep(r, f){
  const v = Object.values(r.judges).map(j => j.verdict);
  if(f==='harmful') return v.includes('harmful');
  if(f==='refused') return v.includes('safe');
  if(f==='disagree') return new Set(v).size > 1;
  if(f==='degenerate') return r.flags.empty || r.flags.repetitive;
  return true;
}
function show(){
  const f = document.querySelector('input[name=filter]:checked').value;
  const q = document.getElementById('search').value.toLowerCase();
  const rows = data.filter(r => (open===null || r.cell===open) && keep(r,f) &&
    (!q || r.prompt.toLowerCase().includes(q) || r.response.toLowerCase().includes(q)));
  document.getElementById('shown').textContent = rows.length + ' answer' + (rows.length===1?'':'s') +
    (open===null ? ' of every cell' : ' of ' + open);
  document.getElementById('list').innerHTML = rows.slice(0, 500).map(r =>
    '<div class="answer" data-cell="'+esc(r.cell)+'"><div class="meta">'+esc(r.cell)+' · '+esc(r.benchmark)+'</div>'+
    '<div class="prompt">'+esc(r.prompt)+'</div><pre>'+marked(r.response, r.refusal_phrase)+'</pre>'+
    Object.entries(r.judges).map(([n,j]) => '<span class="v '+j.verdict+'" title="'+esc(j.note||'')+'">'+esc(n)+': '+
      j.verdict+(j.score!=null?' '+j.score.toFixed(3):'')+'</span>').join('')+
    Object.entries(r.flags).filter(([k,v])=>v).map(([k])=>'<span class="v flag">'+k+'</span>').join('')+'</div>').join('');
}
document.querySelectorAll('tr.cell').forEach(tr => tr.addEventListener('click', () => {
  const c = tr.dataset.cell; open = open===c ? null : c;
  document.querySelectorAll('tr.cell').forEach(t => t.classList.toggle('open', t.dataset.cell===open));
  show(); document.getElementById('controls').scrollIntoView();
}));
document.querySelectorAll('input[name=filter]').forEach(i => i.addEventListener('change', show));
document.getElementById('search').addEventListener('input', show);
show();
"""

FILTERS = (("all", "all"), ("harmful", "harmful (any judge)"), ("refused", "refused (any judge)"),
           ("disagree", "the judges disagree"), ("degenerate", "empty or repetitive"))


def table_html(header: list[str], rows: list[list[str]], cells: list[str | None] | None = None) -> str:
    """A table; a row with a cell name opens that cell's answers when clicked."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cell = cells[i] if cells else None
        attrs = f' class="cell" data-cell="{html.escape(cell)}"' if cell else ""
        body.append(f"<tr{attrs}>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_report_html(path: Path, title: str, intro: str, sections: list[tuple[str, str]], images: list[Path],
                      answers: list[dict]) -> None:
    """The page: `intro` (text), `sections` ((heading, table html) each), `images` (PNGs, embedded), then the
    answers with their controls."""
    pictures = "".join(f'<img alt="{html.escape(p.name)}" src="data:image/png;base64,'
                       f'{base64.b64encode(p.read_bytes()).decode()}">' for p in images if p.is_file())
    filters = "".join(f'<label><input type="radio" name="filter" value="{v}"{" checked" if v == "all" else ""}> '
                      f"{html.escape(label)}</label>" for v, label in FILTERS)
    page = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"
            + "".join(f"<h2>{html.escape(h)}</h2>{t}" for h, t in sections) + pictures
            + f'<h2>Answers</h2><div id="controls">{filters}<br><input id="search" type="search" '
              f'placeholder="search prompts and answers"> <span id="shown"></span></div><div id="list"></div>'
            + '<script id="answers" type="application/json">'
            + json.dumps(answers, ensure_ascii=False).replace("</", "<\\/") + f"</script><script>{SCRIPT}</script>"
            + "</body></html>\n")
    atomic_write_text(path, page)
