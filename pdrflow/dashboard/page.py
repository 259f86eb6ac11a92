"""The HTML of the pdrflow dashboard page: a static shell whose script polls the JSON route.

Plain HTML + a small script (no Bokeh session): it works behind the same proxies and SSH tunnels
as the rest of the dashboard, and a refresh is one small JSON request. It borrows the dashboard's
stylesheet and navigation links so it looks like one of its pages.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape

from ..states import STATE_COLOURS, STATES

# A cell with no model in it is drawn white.
COLOURS: dict[str, str] = {**{state.value: colour for state, colour in STATE_COLOURS.items()}, "empty": "#ffffff"}

_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; }
#pdrflow { padding: 12px 20px; box-sizing: border-box; height: auto; }
#pdrflow h1 { font-size: 20px; margin: 4px 0 2px 0; }
#pdrflow .sub { color: #555; font-size: 13px; margin-bottom: 10px; }
#counts { display: flex; flex-wrap: wrap; gap: 8px; margin: 8px 0 14px 0; }
.count { border: 1px solid #bbb; border-radius: 4px; padding: 4px 10px; font-size: 14px; display: flex;
         align-items: center; gap: 6px; }
.swatch { width: 14px; height: 14px; border: 1px solid #888; display: inline-block; }
.count b { font-variant-numeric: tabular-nums; }
#progress { height: 10px; background: #eee; border-radius: 5px; overflow: hidden; max-width: 720px;
            display: flex; margin-bottom: 12px; }
#progress span { height: 100%; }
#facets { display: flex; flex-wrap: wrap; gap: 22px; }
.facet h2 { font-size: 13px; font-weight: normal; margin: 0 0 4px 0; }
.facet .frame { display: grid; grid-template-columns: auto auto; grid-template-rows: auto auto; }
.map { display: grid; width: max-content; height: max-content; gap: 1px; background: #999; border: 1px solid #999; }
.cell { width: var(--cell); height: var(--cell); }
.ylab { display: grid; font-size: 10px; text-align: right; padding-right: 4px; color: #333; }
.xlab { display: grid; font-size: 10px; color: #333; }
.xlab span { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; padding-top: 3px; }
.ylab span { display: flex; align-items: center; justify-content: flex-end; }
.axis { font-size: 11px; color: #555; }
#message { font-size: 15px; margin: 14px 0; }
#message.error { color: #b00; }
#pager { margin: 6px 0 10px 0; font-size: 13px; }
"""

# The page script: poll, then either patch the cells' data-state in place (same layout) or redraw.
_SCRIPT = """
const COLOURS = %(colours)s;
const STATES = %(states)s;
const DATA_URL = %(data_url)s;
const REFRESH_MS = %(refresh_ms)d;
let page = 0;
let layoutKey = null;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawCounts(data) {
  const box = document.getElementById('counts');
  box.replaceChildren();
  const bar = document.getElementById('progress');
  bar.replaceChildren();
  const total = Math.max(data.total, 1);
  const all = el('div', {'class': 'count', 'id': 'count-total', 'data-count': data.total});
  all.append('total ', el('b', {}, String(data.total)));
  box.append(all);
  for (const state of STATES) {
    const n = data.counts[state] || 0;
    const item = el('div', {'class': 'count', 'id': 'count-' + state, 'data-state': state, 'data-count': n});
    item.append(el('span', {'class': 'swatch', 'style': 'background:' + COLOURS[state]}),
                state.replace('_', ' ') + ' ', el('b', {}, String(n)));
    box.append(item);
    if (n > 0) bar.append(el('span', {'style': 'background:' + COLOURS[state] + ';width:' + (100 * n / total) + '%%',
                                      'title': state + ': ' + n}));
  }
}

function cellTitle(facet, data, flat) {
  const nd = data.density.length;
  const i = flat %% nd, j = Math.floor(flat / nd);
  let text = 'n = ' + data.density[i] + ' cm⁻³, χ = ' + data.fuv[j];
  const mixed = facet.mixed[String(flat)];
  if (mixed) text += ': ' + Object.entries(mixed).map(([s, n]) => n + ' ' + s).join(', ');
  return text;
}

function expand(runs) {
  const out = [];
  for (const [state, n] of runs) for (let k = 0; k < n; k++) out.push(state);
  return out;
}

// Tooltips are computed on hover from the latest data, not stored on 20 000 cells every refresh.
let latest = null;
document.addEventListener('mouseover', (event) => {
  const cell = event.target.closest && event.target.closest('.cell');
  if (!cell || !latest) return;
  const facets = Array.from(document.querySelectorAll('.facet'));
  const facet = latest.facets[facets.indexOf(cell.closest('.facet'))];
  if (facet) cell.title = cellTitle(facet, latest, Number(cell.dataset.flat));
});

function drawFacets(data) {
  latest = data;
  const box = document.getElementById('facets');
  const nd = data.density.length, nf = data.fuv.length;
  const key = JSON.stringify([data.page, data.density, data.fuv, data.facets.map(f => [f.metallicity, f.mass])]);
  if (key === layoutKey) {  // same layout: patch states and titles in place (no flicker, cheap)
    data.facets.forEach((facet, fi) => {
      const node = box.children[fi];
      node.querySelector('h2').textContent = facet.label + ' — ' + facet.counts.archived + ' archived of ' +
        Object.values(facet.counts).reduce((a, b) => a + b, 0);
      const cells = node.querySelectorAll('.cell');
      expand(facet.cells).forEach((state, flat) => {
        // cells are in DOM order, top row (last FUV) first
        const cell = cells[(nf - 1 - Math.floor(flat / nd)) * nd + flat %% nd];
        if (cell.dataset.state !== state) {
          cell.dataset.state = state;
          cell.style.background = COLOURS[state];
        }
      });
    });
    return;
  }
  layoutKey = key;
  box.replaceChildren();
  const size = Math.max(4, Math.min(28, Math.floor(520 / Math.max(nd, nf, 1))));
  data.facets.forEach((facet) => {
    const node = el('div', {'class': 'facet', 'data-metallicity': facet.metallicity, 'data-mass': facet.mass});
    node.append(el('h2', {}, facet.label + ' — ' + facet.counts.archived + ' archived of ' +
      Object.values(facet.counts).reduce((a, b) => a + b, 0)));
    const frame = el('div', {'class': 'frame'});
    const ylab = el('div', {'class': 'ylab', 'style': 'grid-template-rows: repeat(' + nf + ', ' + size + 'px); gap: 1px; padding-top: 1px'});
    // FUV grows upwards: the top row is the last FUV value
    // tick labels: every step-th value, so small cells do not overprint them
    const step = Math.max(1, Math.ceil(12 / size));
    for (let j = nf - 1; j >= 0; j--) ylab.append(el('span', {}, j %% step === 0 ? data.fuv[j] : ''));
    const map = el('div', {'class': 'map', 'style': '--cell:' + size + 'px; grid-template-columns: repeat(' + nd + ', ' + size + 'px)'});
    const states = expand(facet.cells);
    for (let j = nf - 1; j >= 0; j--) {
      for (let i = 0; i < nd; i++) {
        const flat = j * nd + i;
        const state = states[flat];
        const cell = el('div', {'class': 'cell', 'data-state': state, 'data-density': data.density[i],
                                'data-fuv': data.fuv[j], 'data-flat': flat});
        cell.style.background = COLOURS[state];
        map.append(cell);
      }
    }
    const xlab = el('div', {'class': 'xlab', 'style': 'grid-template-columns: repeat(' + nd + ', ' + size + 'px); gap: 1px; padding-left: 1px'});
    for (let i = 0; i < nd; i++) xlab.append(el('span', {}, i %% step === 0 ? data.density[i] : ''));
    frame.append(ylab, map, el('div'), xlab);
    node.append(frame, el('div', {'class': 'axis'}, '→ density n [cm⁻³], ↑ FUV χ [Draine]' +
                                                    (data.binned ? ' (neighbouring values binned)' : '')));
    box.append(node);
  });
}

function drawPager(data) {
  const pager = document.getElementById('pager');
  pager.replaceChildren();
  if (data.pages <= 1) return;
  const prev = el('button', {}, '◀'), next = el('button', {}, '▶');
  prev.disabled = data.page === 0;
  next.disabled = data.page >= data.pages - 1;
  prev.onclick = () => { page = data.page - 1; refresh(); };
  next.onclick = () => { page = data.page + 1; refresh(); };
  pager.append(prev, ' facets page ' + (data.page + 1) + ' of ' + data.pages + ' (' + data.facet_total +
               ' facets) ', next);
}

async function refresh() {
  const message = document.getElementById('message');
  try {
    const response = await fetch(DATA_URL + '?page=' + page, {cache: 'no-store'});
    const data = await response.json();
    document.getElementById('updated').textContent = data.updated || '';
    const eta = document.getElementById('eta');
    eta.textContent = data.eta ? 'ETA ' + data.eta.text + (data.eta.rate_text ? ' · ' + data.eta.rate_text : '')
                                 + ' · ' + data.eta.slots + ' worker slots' : '';
    eta.dataset.seconds = data.eta && data.eta.seconds !== null ? String(data.eta.seconds) : '';
    if (data.error) {
      message.className = 'error';
      message.textContent = data.error;
      return;
    }
    if (!data.found) {
      message.className = '';
      message.dataset.found = 'false';
      message.textContent = 'The ledger has no grid named "' + data.grid + '" (yet): nothing to show.';
      drawCounts(data);
      document.getElementById('facets').replaceChildren();
      layoutKey = null;
      return;
    }
    message.className = '';
    message.dataset.found = 'true';
    message.textContent = data.total === 0 ? 'The grid has no jobs.' : '';
    drawCounts(data);
    drawPager(data);
    drawFacets(data);
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  } catch (err) {
    message.className = 'error';
    message.textContent = 'cannot reach the scheduler: ' + err;
  } finally {
    window.setTimeout(refresh, REFRESH_MS);
  }
}
refresh();
"""


def render_page(grid: str, ledger: str, data_url: str, refresh_seconds: float, nav_pages: Sequence[str]) -> str:
    """The page shell. ``ledger`` must already be a password-free description of the database."""
    nav = "".join(
        f'<li><a href="{escape(page)}">{escape(page.title())}</a></li>' for page in nav_pages
    )
    script = _SCRIPT % {
        "colours": json.dumps(COLOURS),
        "states": json.dumps(list(STATES)),
        "data_url": json.dumps(data_url),
        "refresh_ms": int(refresh_seconds * 1000),
    }
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8" />
<title>pdrflow: {escape(grid)}</title>
<link rel="stylesheet" href="statics/css/base.css" />
<link rel="shortcut icon" href="statics/images/favicon.ico" />
<style>{_STYLE}</style>
</head>
<body>
<div class="navbar" id="myTopnav"><ul>
<li id="dask-logo"><a href="https://dask.org/"><img src="statics/images/dask-logo.svg"></a></li>
{nav}
</ul></div>
<div class="content" id="pdrflow">
<h1>pdrflow grid <span id="grid-name">{escape(grid)}</span></h1>
<div class="sub">job states from the ledger ({escape(ledger)}) · updated <span id="updated"></span></div>
<div id="eta" class="sub"></div>
<div id="message"></div>
<div id="counts"></div>
<div id="progress"></div>
<div id="pager"></div>
<div id="facets"></div>
</div>
<script>{script}</script>
</body>
</html>
"""
