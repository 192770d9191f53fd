// One job: its body for people, live over /stream; its row errors and history, paged; Cancel.

import { ApiError, follow, jobPath, request } from './api.js';
import { announce, h, progressBar, replace } from './dom.js';
import { nothingYet, num, statusName, t, when } from './i18n.js';
import { empty, explain, failure, loading } from './states.js';

const TERMINAL = new Set(['SUCCESS', 'FAILURE']);
const ERRORS_PAGE = 20;
const HISTORY_PAGE = 50;
/** After live news, errors, history and counters are read again at most this often, in ms. */
const REFRESH_EVERY = 1000;
/** Whether this server answers the job listing (where the counters of a running job come from). */
let listing = true;

/** The job's listing entry (labels, counters, times), found by its creation time; or null. */
async function listed(id, createdAt, signal) {
  if (!listing || !createdAt) return null;
  const at = new Date(createdAt).getTime();
  const query = {
    created_after: new Date(at - 2000).toISOString(),
    created_before: new Date(at + 2000).toISOString(), limit: 200,
  };
  for (let pages = 0; pages < 5; pages += 1) {
    let page;
    try {
      page = await request('jobs', { query, signal });
    } catch (error) {
      if (error.status === 404 || error.status === 405) listing = false;
      return null;
    }
    const found = page.jobs.find((job) => job.job_id === id);
    if (found || !page.next_page_token) return found || null;
    query.page_token = page.next_page_token;
  }
  return null;
}

/** Ask with the page's <dialog> whether to cancel; resolves true to go ahead. */
function confirmCancel(id) {
  const dialog = document.getElementById('confirm-cancel');
  document.getElementById('confirm-title').textContent = t.cancelTitle;
  document.getElementById('confirm-text').textContent = t.cancelText(id);
  const yes = document.getElementById('confirm-yes');
  const keep = document.getElementById('confirm-keep');
  yes.textContent = t.cancelYes;
  keep.textContent = t.cancelKeep;
  return new Promise((resolve) => {
    const choose = (answer) => () => dialog.close(answer);
    const onYes = choose('yes');
    const onKeep = choose('keep');
    yes.addEventListener('click', onYes);
    keep.addEventListener('click', onKeep);
    dialog.addEventListener('close', () => {
      yes.removeEventListener('click', onYes);
      keep.removeEventListener('click', onKeep);
      resolve(dialog.returnValue === 'yes');
    }, { once: true });
    dialog.returnValue = '';
    dialog.showModal();
  });
}

function detailsOf(event) {
  const skip = new Set(['version', 'position', 'type', 'event_id', 'recorded_at']);
  return Object.entries(event).filter(([name]) => !skip.has(name))
    .map(([name, value]) => `${name}: ${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(' · ');
}

function counter(name, className, value) {
  return h('div', { className: `counter ${className}` }, h('dt', {}, name), h('dd', {}, num(value)));
}

/** Show job `id` in `main`; its requests and stream stop when `signal` aborts. */
export function showJob(main, id, signal) {
  const summary = h('div', { id: 'summary', 'aria-busy': 'true' }, loading());
  const errorsBox = h('div', { id: 'errors' });
  const historyBox = h('div', { id: 'history' });
  const notice = h('p', { id: 'notice', role: 'status', className: 'notice', tabindex: '-1' });
  let body = null;
  let entry = null; // the listing's entry: labels and the counters of a running job
  let errorsPage = null;
  let errorCursors = [-1];
  let history = [];
  let historyNext = 0;
  let live = false;
  let refreshTimer = 0;
  let lastRefresh = 0;

  replace(main, h('article', { className: 'job-view', 'aria-labelledby': 'job-title' },
    h('p', {}, h('a', { href: '#/jobs', className: 'back' }, `← ${t.back}`)),
    h('h1', { id: 'job-title', tabindex: '-1', className: 'job-id' }, id),
    notice, summary,
    h('section', { 'aria-labelledby': 'errors-title' }, h('h2', { id: 'errors-title' }, t.errors), errorsBox),
    h('section', { 'aria-labelledby': 'history-title' }, h('h2', { id: 'history-title' }, t.history), historyBox)));

  function stopAll(error) {
    summary.removeAttribute('aria-busy');
    replace(main.querySelector('.job-view'),
      h('p', {}, h('a', { href: '#/jobs', className: 'back' }, `← ${t.back}`)),
      h('h1', { id: 'job-title', tabindex: '-1', className: 'job-id' }, id),
      failure(error, () => showJob(main, id, signal)));
  }

  function counters() {
    const result = body.result || {};
    const fromListing = entry && entry.counts ? entry.counts : {};
    const successful = result.successful ?? fromListing.successful;
    const failed = result.failed ?? fromListing.failed ?? errorsPage?.errors_total;
    const processed = result.total ?? (Number.isFinite(successful) && Number.isFinite(failed) ? successful + failed : undefined);
    return h('section', { 'aria-labelledby': 'counters-title', className: 'counters-box' },
      h('h2', { id: 'counters-title' }, t.counters),
      h('dl', { className: 'counters' },
        counter(t.total, 'total', processed), counter(t.successful, 'successful ok', successful),
        counter(t.failed, 'failed bad', failed), counter(t.emailsSent, 'emails-sent', result.emails_sent),
        counter(t.emailsFailed, 'emails-failed', result.emails_failed),
        counter(t.internal, 'internal', result.internal_count),
        counter(t.external, 'external', result.external_count)),
      body.result ? null : h('p', { className: 'muted small' }, t.countsLater));
  }

  function progressOf() {
    if (body.progress) return [body.progress.current, body.progress.total, body.progress.status];
    if (body.result) return [body.result.total, body.result.total, null];
    if (entry && entry.progress) return [entry.progress.current, entry.progress.total, null];
    return [0, 0, null];
  }

  function drawSummary() {
    summary.removeAttribute('aria-busy');
    const [current, total, text] = progressOf();
    const label = total > 0 || current > 0 ? t.progressOf(num(current), num(total)) : nothingYet(body.status);
    const running = !TERMINAL.has(body.status);
    const labels = Object.entries(entry?.labels || {});
    const focused = summary.contains(document.activeElement) ? document.activeElement.id : '';
    replace(summary,
      h('div', { className: 'status-row' },
        h('span', { id: 'job-status', className: `badge status-${body.status}` }, statusName(body.status)),
        live ? h('span', { className: 'live' }, t.live) : null,
        running && !body.cancel_requested
          ? h('button', { type: 'button', id: 'cancel', className: 'danger', onclick: cancel }, t.cancel) : null),
      body.cancel_requested ? h('p', { className: 'cancel-note' }, t.cancelAsked) : null,
      body.status === 'FAILURE' ? h('p', { className: 'job-error', id: 'job-error' }, `${t.failure}: `, h('span', {}, body.error)) : null,
      labels.length ? h('ul', { className: 'labels', 'aria-label': t.labels }, labels.map(([k, v]) => h('li', {}, `${k}: ${v}`))) : null,
      progressBar('job-progress', `${t.progress}: ${label}`, current, total),
      text ? h('p', { className: 'progress-text muted' }, text) : null,
      entry ? h('p', { className: 'muted small' }, `${t.created} ${when(entry.created_at)}`,
        entry.finished_at ? ` · ${t.finished} ${when(entry.finished_at)}` : '') : null,
      counters());
    if (focused) document.getElementById(focused)?.focus(); // a live redraw keeps the focus
  }

  async function cancel() {
    if (!(await confirmCancel(id))) return;
    notice.textContent = '';
    try {
      body = await request(jobPath(id, '/cancel'), { method: 'POST', signal });
      notice.textContent = t.cancelDone;
      drawSummary();
      refresh();
    } catch (error) {
      if (!signal.aborted) notice.textContent = explain(error);
    }
    notice.focus(); // the Cancel button is gone: say where things stand
  }

  async function loadErrors(cursor) {
    try {
      errorsPage = await request(jobPath(id, '/errors'), { query: { after_row: cursor, limit: ERRORS_PAGE }, signal });
    } catch (error) {
      if (!signal.aborted) replace(errorsBox, failure(error));
      return;
    }
    const page = errorsPage;
    if (!page.errors.length && errorCursors.length === 1) {
      replace(errorsBox, empty(t.errorsNone));
      return;
    }
    const first = (errorCursors.length - 1) * ERRORS_PAGE + 1;
    const table = h('table', { id: 'errors-table' },
      h('caption', {}, `${t.errors} ${first}–${first + page.errors.length - 1} · ${t.errorsTotal(num(page.errors_total))}`),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, t.row), h('th', { scope: 'col' }, t.email), h('th', { scope: 'col' }, t.error))),
      h('tbody', {}, page.errors.map((e) => h('tr', {}, h('td', { className: 'num' }, e.row), h('td', { className: 'email' }, e.email), h('td', {}, e.error)))));
    const pager = h('nav', { className: 'pager', 'aria-label': t.errors },
      h('button', {
        type: 'button', id: 'errors-previous', className: 'secondary', disabled: errorCursors.length === 1,
        onclick: () => { errorCursors.pop(); loadErrors(errorCursors.at(-1)); },
      }, t.previous),
      h('button', {
        type: 'button', id: 'errors-next', className: 'secondary', disabled: page.next_after_row === null,
        onclick: () => { errorCursors.push(page.next_after_row); loadErrors(page.next_after_row); },
      }, t.next));
    replace(errorsBox, h('div', { className: 'table-wrap' }, table), pager);
  }

  async function loadHistory() {
    if (historyNext === null) return;
    let page;
    try {
      page = await request(jobPath(id, '/events'), { query: { after_version: historyNext, limit: HISTORY_PAGE }, signal });
    } catch (error) {
      if (!signal.aborted) replace(historyBox, failure(error));
      return;
    }
    history = history.concat(page.events);
    historyNext = page.next_after_version;
    drawHistory();
  }

  async function historyTail() {
    // Once the whole history is shown, new events are added at its end as they come.
    if (historyNext !== null || !history.length) return;
    historyNext = history.at(-1).version;
    await loadHistory();
  }

  function drawHistory() {
    if (!history.length) {
      replace(historyBox, empty(t.historyEmpty));
      return;
    }
    const table = h('table', { id: 'history-table' },
      h('caption', { className: 'visually-hidden' }, t.history),
      h('thead', {}, h('tr', {}, [t.version, t.type, t.recorded, t.details].map((name) => h('th', { scope: 'col' }, name)))),
      h('tbody', {}, history.map((e) => h('tr', {},
        h('td', { className: 'num' }, e.version), h('td', {}, e.type),
        h('td', {}, h('time', { datetime: e.recorded_at }, when(e.recorded_at))), h('td', { className: 'details' }, detailsOf(e))))));
    replace(historyBox, h('div', { className: 'table-wrap' }, table),
      historyNext === null ? null : h('button', { type: 'button', id: 'history-more', className: 'secondary', onclick: loadHistory }, t.loadMore));
  }

  async function refresh() {
    lastRefresh = Date.now();
    await Promise.all([loadErrors(errorCursors.at(-1)), historyTail()]);
    const found = await listed(id, history[0]?.recorded_at, signal);
    if (signal.aborted) return;
    if (found) entry = found;
    drawSummary();
  }

  function scheduleRefresh() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = 0; refresh(); },
      Math.max(200, lastRefresh + REFRESH_EVERY - Date.now()));
  }

  async function start() {
    try {
      body = await request(jobPath(id), { signal });
    } catch (error) {
      if (!signal.aborted) stopAll(error);
      return;
    }
    drawSummary();
    await loadHistory();
    await refresh();
    summary.dataset.loaded = 'true';
    if (TERMINAL.has(body.status) || signal.aborted) return;
    follow(id, {
      signal,
      onState: (on) => { if (live !== on) { live = on; drawSummary(); } },
      onError: (error) => { if (error instanceof ApiError && error.status !== 0) stopAll(error); },
      onBody: (next) => {
        body = next;
        if (TERMINAL.has(next.status)) live = false;
        drawSummary();
        const [current, total] = progressOf();
        announce(TERMINAL.has(next.status) ? statusName(next.status) : `${t.progress}: ${t.progressOf(current, total)}`);
        scheduleRefresh();
      },
    });
  }

  signal.addEventListener('abort', () => clearTimeout(refreshTimer), { once: true });
  start();
}
