// The Rate tab in the browser (review/rate_tab.py): one key per answer, the current question marked,
// zoom, and the lock that keeps answers from reaching an image that is not on screen.
// Installed once per page by review/ui.py (the account bar's HTML block, js_on_load), which puts
// the tab's stylesheet (review/rate.css) in POLYP_RATE_CSS before this text.
//
// Keys: digits answer the marked question (1 = first option) and move to the next unanswered one;
// Up/Down move; Enter submits; Z zooms the image (in a pair: left, right, off); Escape leaves the
// zoom or the comment box. From a submit until the next image has loaded (or the server has said
// what is missing) the answers are locked: keys are dropped and clicks do not reach them.
if (!window.__polypRate) {
  const rate = window.__polypRate = { cursor: -1, locked: false, unlocking: false, status: null };
  const style = document.createElement('style');
  style.id = 'polyp-rate-css';
  style.textContent = POLYP_RATE_CSS;
  document.head.appendChild(style);

  const shown = el => !!el && el.getClientRects().length > 0;
  const screen = () => { const s = document.getElementById('rate-screen'); return shown(s) ? s : null; };
  const groups = () => { const s = screen(); return s ? [...s.querySelectorAll('.kbd-q')].filter(shown) : []; };
  const answered = g => g.querySelector('input:checked') !== null;
  const open = g => !answered(g) && !g.classList.contains('kbd-multi');
  const images = () => { const s = screen(); return s ? [...s.querySelectorAll('.rate-image')].filter(shown) : []; };
  const loaded = () => images().every(box => [...box.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0));
  const noticeText = () => { const n = document.getElementById('rate-notice'); return n ? n.textContent.trim() : ''; };

  const mark = (gs, i) => {
    gs.forEach((g, j) => g.classList.toggle('kbd-current', j === i));
    rate.cursor = i;
  };
  const firstOpen = (gs, after = -1) => gs.findIndex((g, j) => j > after && open(g));
  const setLocked = on => {
    rate.locked = on;
    document.body.classList.toggle('polyp-locked', on);
  };
  const zoomed = () => document.querySelector('.rate-image.polyp-zoom');
  const zoom = box => {
    const current = zoomed();
    if (current) current.classList.remove('polyp-zoom');
    if (box && box !== current) box.classList.add('polyp-zoom');
  };

  // A submit (Enter or a click) locks the answers at once, before anything else can happen; the
  // submit event's end (rate_tab.UNLOCK_JS) lets refresh() unlock them once the screen is ready.
  const lock = () => { rate.unlocking = false; setLocked(true); zoom(null); };
  window.__polypUnlock = () => { rate.unlocking = true; schedule(); };

  // After any change of the page: a new trial resets the marks; a finished submit unlocks once the
  // new image has loaded, marking every question the server said is missing.
  function refresh() {
    const s = screen();
    if (!s) { if (rate.locked && rate.unlocking) { setLocked(false); rate.unlocking = false; } rate.status = null; return; }
    const gs = groups();
    const status = (document.getElementById('rate-status') || {}).textContent || '';
    if (status !== rate.status) {
      rate.status = status;
      rate.cursor = -1;
      s.querySelectorAll('.kbd-missing').forEach(g => g.classList.remove('kbd-missing'));
    }
    if (rate.locked && rate.unlocking && loaded()) {
      rate.unlocking = false;
      setLocked(false);
      if (noticeText()) {
        gs.forEach(g => g.classList.toggle('kbd-missing', g.classList.contains('kbd-required') && !answered(g)));
        rate.cursor = -1;
      }
    }
    if (gs.length && (rate.cursor < 0 || rate.cursor >= gs.length || !gs[rate.cursor].classList.contains('kbd-current'))) {
      const i = firstOpen(gs);
      mark(gs, i < 0 ? 0 : i);
    }
  }
  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => requestAnimationFrame(() => { pending = false; refresh(); }));
  }
  new MutationObserver(schedule).observe(document.body, { childList: true, subtree: true, characterData: true,
                                                          attributes: true, attributeFilter: ['src', 'class'] });
  document.addEventListener('load', schedule, true);  // an image finished loading

  // An answer (a digit or a click) moves the mark on to the next unanswered question.
  const answeredNow = (g) => {
    g.classList.remove('kbd-missing');
    const gs = groups();
    const i = gs.indexOf(g);
    if (i < 0 || g.classList.contains('kbd-multi')) { if (i >= 0) mark(gs, i); return; }
    const next = firstOpen(gs, i);
    mark(gs, next < 0 ? Math.min(i + 1, gs.length - 1) : next);
  };
  document.addEventListener('change', (e) => {
    const g = e.target.closest && e.target.closest('#rate-screen .kbd-q');
    if (g) answeredNow(g);
  });
  document.addEventListener('click', (e) => {
    if (!e.target.closest) return;
    if (e.target.closest('#rate-submit')) { lock(); return; }
    const box = e.target.closest('#rate-screen .rate-image');
    if (box) { zoom(box); e.preventDefault(); e.stopPropagation(); }
  }, true);

  document.addEventListener('keydown', (e) => {
    if (!screen() || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && !['radio', 'checkbox'].includes(t.type)))) {
      if (e.key === 'Escape') t.blur();
      return;
    }
    const answerKey = e.key === 'Enter' || /^[1-9]$/.test(e.key);
    if (rate.locked) { if (answerKey) e.preventDefault(); return; }  // nothing reaches an image not yet on screen
    const gs = groups();
    let i = rate.cursor;
    if (i < 0 || i >= gs.length) { i = firstOpen(gs); if (i < 0) i = 0; }
    if (e.key === 'Escape') {
      zoom(null);
    } else if (e.key === 'z' || e.key === 'Z') {
      const boxes = images();
      const at = boxes.indexOf(zoomed());
      zoom(at + 1 < boxes.length ? boxes[at + 1] : null);
      e.preventDefault();
    } else if (e.key === 'Enter') {
      const submit = document.getElementById('rate-submit');
      if (shown(submit)) { submit.click(); e.preventDefault(); }
    } else if (!gs.length) {
      return;
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      mark(gs, Math.max(0, Math.min(gs.length - 1, i + (e.key === 'ArrowDown' ? 1 : -1))));
      e.preventDefault();
    } else if (/^[1-9]$/.test(e.key)) {
      const inputs = gs[i].querySelectorAll('input');
      const n = parseInt(e.key, 10) - 1;
      e.preventDefault();
      if (n >= inputs.length) return;
      const again = inputs[n].type === 'radio' && inputs[n].checked;  // no change event: move on here
      inputs[n].click();
      if (again) answeredNow(gs[i]);
    }
  });
}
