"""``regcleaner usage --html FILE``: one self-contained page (inline CSS, SVG and
script, no external URL): the totals, a bar chart of space by repository and a table
sortable by any column.

The chart is drawn here as SVG, so it shows without script; the script only sorts the
table (click a heading, or open the page with ``#sort=<column>`` or
``#sort=-<column>``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from html import escape
from typing import IO

from regcleaner import __version__
from regcleaner.space import human_bytes
from regcleaner.usage.model import RepositoryUsage, UsageTotals

CHART_BARS = 30
BAR_WIDTH = 560
"""Pixels of the largest repository's bar."""
LABEL_WIDTH = 260
"""Pixels left of the bars, for the repository names."""
_COLUMNS = (
    ("name", "repository", "text"),
    ("tags", "tags", "number"),
    ("manifests", "manifests", "number"),
    ("untagged_manifests", "untagged", "number"),
    ("referenced_bytes", "referenced", "bytes"),
    ("exclusive_bytes", "exclusive", "bytes"),
    ("reclaimable_bytes", "reclaimable", "bytes"),
)
_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1b1f24}
h1{font-size:20px;margin:0 0 4px} .meta{color:#57606a;margin:0 0 16px}
.totals{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:8px;
margin-bottom:20px}
.totals div{border:1px solid #d0d7de;border-radius:6px;padding:8px 10px}
.totals b{display:block;font-size:17px}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;
vertical-align:middle}
svg text{font-size:12px;fill:#1b1f24} .ref{fill:#c8d6e5} .exc{fill:#5b8def} .rec{fill:#d9534f}
table{border-collapse:collapse;margin-top:20px;min-width:60%}
th,td{border-bottom:1px solid #d0d7de;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}
th{cursor:pointer;user-select:none;background:#f6f8fa}
th[aria-sort=ascending]::after{content:" \\25B2"} th[aria-sort=descending]::after{content:" \\25BC"}
"""
_SCRIPT = """
(function(){
  var table=document.getElementById('usage-table');
  var body=table.tBodies[0];
  var heads=table.tHead.rows[0].cells;
  function sortBy(column,descending){
    var index=-1,kind='text';
    for(var i=0;i<heads.length;i++){
      if(heads[i].dataset.column===column){index=i;kind=heads[i].dataset.kind;}
      heads[i].removeAttribute('aria-sort');
    }
    if(index<0){return;}
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=a.cells[index].dataset.value,y=b.cells[index].dataset.value,c;
      if(kind==='text'){c=x<y?-1:(x>y?1:0);}else{c=Number(x)-Number(y);}
      if(c===0){c=a.cells[0].dataset.value<b.cells[0].dataset.value?-1:1;return c;}
      return descending?-c:c;
    });
    rows.forEach(function(r){body.appendChild(r);});
    heads[index].setAttribute('aria-sort',descending?'descending':'ascending');
    table.dataset.sortedBy=(descending?'-':'')+column;
  }
  for(var i=0;i<heads.length;i++){
    heads[i].addEventListener('click',function(e){
      var th=e.currentTarget;
      var descending=th.getAttribute('aria-sort')!=='descending';
      if(th.dataset.kind==='text'&&!th.hasAttribute('aria-sort')){descending=false;}
      sortBy(th.dataset.column,descending);
    });
  }
  // What the browser drew, for checks and tools: each bar's width on screen.
  var chart=document.getElementById('usage-chart');
  if(chart){chart.dataset.drawnWidth=chart.getBoundingClientRect().width.toFixed(1);}
  var bars=document.querySelectorAll('#usage-chart g.bar');
  for(var j=0;j<bars.length;j++){
    var drawn=bars[j].querySelector('rect.ref').getBoundingClientRect();
    bars[j].dataset.drawnWidth=drawn.width.toFixed(1);
  }
  var match=/sort=(-?)([a-z_]+)/.exec(window.location.hash);
  if(match){sortBy(match[2],match[1]==='-');}
})();
"""


def _chart(rows: list[RepositoryUsage]) -> str:
    """Horizontal bars, largest referenced first: referenced (light), exclusive (inside
    it), reclaimable (inside that), each bar with its numbers in a title."""
    label_width, bar_width, row_height = LABEL_WIDTH, BAR_WIDTH, 22
    largest = max((r.referenced_bytes for r in rows), default=0) or 1
    height = row_height * len(rows) + 10
    parts = [
        f'<svg id="usage-chart" role="img" aria-label="Space by repository" '
        f'width="{label_width + bar_width + 120}" height="{height}">'
    ]
    for i, row in enumerate(rows):
        y = i * row_height + 4
        scaled = [max(0.0, v * bar_width / largest) for v in
                  (row.referenced_bytes, row.exclusive_bytes, row.reclaimable_bytes)]  # fmt: skip
        name = escape(row.name)
        title = escape(
            f"{row.name}: referenced {row.referenced_bytes:,} B, exclusive "
            f"{row.exclusive_bytes:,} B, reclaimable {row.reclaimable_bytes:,} B"
        )
        parts.append(
            f'<g class="bar" data-repository="{name}" data-referenced="{row.referenced_bytes}" '
            f'data-exclusive="{row.exclusive_bytes}" data-reclaimable="{row.reclaimable_bytes}">'
            f"<title>{title}</title>"
            f'<text x="{label_width - 8}" y="{y + 14}" text-anchor="end">{name}</text>'
            f'<rect class="ref" x="{label_width}" y="{y}" width="{scaled[0]:.1f}" height="16"/>'
            f'<rect class="exc" x="{label_width}" y="{y}" width="{scaled[1]:.1f}" height="16"/>'
            f'<rect class="rec" x="{label_width}" y="{y + 5}" width="{scaled[2]:.1f}" '
            f'height="6"/>'
            f'<text x="{label_width + scaled[0] + 6:.1f}" y="{y + 14}">'
            f"{escape(human_bytes(row.referenced_bytes))}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def write_html(
    stream: IO[str],
    *,
    storage: str,
    generated_at: str,
    totals: UsageTotals,
    chart_rows: Iterable[RepositoryUsage],
    table_rows: Iterable[RepositoryUsage],
) -> None:
    """The page. ``chart_rows`` are the largest repositories (at most ``CHART_BARS`` are
    drawn); ``table_rows`` all those shown, in their first order."""
    bars = list(chart_rows)[:CHART_BARS]
    figures = (
        ("all blobs in storage", totals.blob_bytes, "blob_bytes"),
        ("shared by 2+ repositories", totals.shared_bytes, "shared_bytes"),
        ("orphaned: gc frees now", totals.orphaned_bytes, "orphaned_bytes"),
        ("reclaimable by a full clean", totals.reclaimable_bytes, "reclaimable_bytes"),
    )
    write = stream.write
    write('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          "<title>Registry space by repository</title>"
          f"<style>{_STYLE}</style></head><body>\n")  # fmt: skip
    write(f"<h1>Registry space by repository</h1><p class=meta>{escape(storage)} &middot; "
          f"{escape(generated_at)} &middot; regcleaner {escape(__version__)}</p>\n")  # fmt: skip
    write('<div class="totals" id="usage-totals">')
    for label, value, key in figures:
        write(f'<div data-total="{key}" data-value="{value}"><b>{escape(human_bytes(value))}'
              f"</b>{escape(label)}</div>")  # fmt: skip
    write(f'<div data-total="repositories" data-value="{totals.repositories}">'
          f"<b>{totals.repositories:,}</b>repositories</div></div>\n")  # fmt: skip
    write('<p class="legend">Largest repositories by referenced bytes:'
          '<span class="ref" style="background:#c8d6e5"></span>referenced'
          '<span style="background:#5b8def"></span>exclusive (freed by deleting it)'
          '<span style="background:#d9534f"></span>reclaimable (freed by a clean)'
          "</p>\n")  # fmt: skip
    write(_chart(bars) + "\n")
    write('<table id="usage-table"><thead><tr>')
    for column, heading, kind in _COLUMNS:
        write(f'<th data-column="{column}" data-kind="{kind}">{escape(heading)}</th>')
    write("</tr></thead><tbody>\n")
    for row in table_rows:
        write(f'<tr data-repository="{escape(row.name)}">')
        for column, _, kind in _COLUMNS:
            value = getattr(row, column)
            shown = escape(str(value)) if kind == "text" else (
                escape(human_bytes(value)) if kind == "bytes" else f"{value:,}")  # fmt: skip
            write(f'<td data-value="{escape(str(value))}">{shown}</td>')
        write("</tr>\n")
    write("</tbody></table>\n")
    data = json.dumps({"totals": totals.as_dict()}).replace("</", "<\\/")
    write(f'<script type="application/json" id="usage-data">{data}</script>\n')
    write(f"<script>{_SCRIPT}</script>\n</body></html>\n")
