// The Rate tab's keyboard: digits answer the highlighted question, arrows move, Enter submits.
// Installed once per page by review/ui.py (an HTML block's js_on_load); drives the visible rating panel.
if (!window.__polypKeys) {
  window.__polypKeys = true;
  window.__polypCursor = -1;
  const groups = () => {
    const panel = [...document.querySelectorAll('.rating-panel')].find(p => p.offsetParent !== null);
    return panel ? [...panel.querySelectorAll('.kbd-q')].filter(g => g.offsetParent !== null) : [];
  };
  const answered = g => g.querySelector('input:checked') !== null;
  const mark = (gs, i) => {
    gs.forEach((g, j) => { g.classList.toggle('kbd-current', j === i); g.style.outline = j === i ? '3px solid #f59e0b' : ''; });
    window.__polypCursor = i;
  };
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && !['radio', 'checkbox'].includes(t.type)))) return;
    const gs = groups();
    if (!gs.length) return;
    let i = window.__polypCursor;
    if (i < 0 || i >= gs.length) { i = gs.findIndex(g => !answered(g)); if (i < 0) i = 0; }
    if (e.key === 'Enter') {
      const submit = document.querySelector('.rating-submit');
      if (submit && submit.offsetParent !== null) { (submit.tagName === 'BUTTON' ? submit : submit.querySelector('button')).click(); window.__polypCursor = -1; e.preventDefault(); }
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      mark(gs, Math.max(0, Math.min(gs.length - 1, i + (e.key === 'ArrowDown' ? 1 : -1)))); e.preventDefault();
    } else if (/^[1-9]$/.test(e.key)) {
      const inputs = gs[i].querySelectorAll('input');
      const n = parseInt(e.key, 10) - 1;
      if (n >= inputs.length) return;
      inputs[n].click();
      e.preventDefault();
      if (gs[i].classList.contains('kbd-multi')) { mark(gs, i); return; }
      const next = gs.findIndex((g, j) => j > i && !answered(g) && !g.classList.contains('kbd-multi'));
      mark(gs, next < 0 ? Math.min(i + 1, gs.length - 1) : next);
    }
  });
}
