// The list of the key's jobs, newest first: filters, pages, and live rows for running jobs.

import { follow, request } from './api.js';
import { announce, h, progressBar, replace } from './dom.js';
import { ago, nothingYet, num, statusName, t, when } from './i18n.js';
import { empty, failure, loading } from './states.js';

const STATUSES = ['PENDING', 'STARTED', 'PROGRESS', 'SUCCESS', 'FAILURE'];
const TERMINAL = new Set(['SUCCESS', 'FAILURE']);
/** Streams open at once: a browser allows six connections to a server, the API needs the rest. */
const MAX_STREAMS = 4;
/** After live news, the page is read again (for the counters) at most this often, in ms. */
const REFRESH_EVERY = 1500;
let firstPaint = true;
let rowSeq = 0;
/** Page tokens of the pages before this one, for "Newer"; kept per filter. */
let trail = { filter: '', tokens: [] };

/** `#/jobs?…` → the listing's query: repeated `status` and `label`, and `page_token`. */
function listQuery(params) {
  return {
    status: params.getAll('status').filter((s) => STATUSES.includes(s)),
    label: params.getAll('label'),
    page_token: params.get('page_token'),
    limit: 50,
  };
}

function hashFor(query) {
  const params = new URLSearchParams();
  for (const status of query.status) params.append('status', status);
  for (const label of query.label) params.append('label', label);
  if (query.page_token) params.set('page_token', query.page_token);
  const text = params.toString();
  return text ? `#/jobs?${text}` : '#/jobs';
}

function filterForm(query) {
  const boxes = STATUSES.map((status) => h('label', { className: 'check' },
    h('input', { type: 'checkbox', name: 'status', value: status, checked: query.status.includes(status) }),
    statusName(status)));
  const labels = h('input', {
    id: 'label-filter', name: 'label', type: 'text', value: query.label.join(', '),
    'aria-describedby': 'label-hint', autocomplete: 'off', spellcheck: 'false',
  });
  const form = h('form', { id: 'filters', className: 'filters', role: 'search' },
    h('fieldset', {}, h('legend', {}, t.status), boxes),
    h('div', { className: 'field' }, h('label', { for: 'label-filter' }, t.label), labels,
      h('small', { id: 'label-hint', className: 'muted' }, t.labelHint)),
    h('div', { className: 'actions' },
      h('button', { type: 'submit' }, t.filter),
      h('a', { href: '#/jobs', className: 'button secondary' }, t.clear)));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = new FormData(form);
    location.hash = hashFor({
      status: data.getAll('status'),
      label: String(data.get('label')).split(',').map((s) => s.trim()).filter(Boolean),
      page_token: null,
    });
  });
  return form;
}

function openForm() {
  const input = h('input', { id: 'open-id', type: 'text', required: true, autocomplete: 'off', spellcheck: 'false' });
  const form = h('form', { id: 'open-job', className: 'open-job' },
    h('label', { for: 'open-id' }, t.openJob), h('div', { className: 'inline' }, input,
      h('button', { type: 'submit' }, t.open)));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (input.value.trim()) location.hash = `#/jobs/${encodeURIComponent(input.value.trim())}`;
  });
  return form;
}

/** One job's row: link, status, labels, progress bar, counters, age. */
function jobRow(job) {
  const id = `progress-${rowSeq += 1}`;
  const { current = 0, total = 0 } = job.progress || {};
  const counts = job.counts || {};
  const labels = Object.entries(job.labels || {});
  const progressText = total > 0 || current > 0 ? t.progressOf(num(current), num(total)) : nothingYet(job.status);
  return h('li', { className: `job status-${job.status}`, 'data-job-id': job.job_id },
    h('div', { className: 'job-head' },
      h('a', { href: `#/jobs/${encodeURIComponent(job.job_id)}`, className: 'job-id' }, job.job_id),
      h('span', { className: `badge status-${job.status}` }, statusName(job.status)),
      job.live ? h('span', { className: 'live', title: t.live }, t.live) : null),
    labels.length ? h('ul', { className: 'labels', 'aria-label': t.labels },
      labels.map(([k, v]) => h('li', {}, `${k}: ${v}`))) : null,
    progressBar(id, `${t.progress}: ${progressText}`, current, total),
    h('p', { className: 'counts' },
      h('span', { className: 'ok' }, `${t.successful} `, h('strong', { className: 'successful' }, num(counts.successful))),
      h('span', { className: 'bad' }, `${t.failed} `, h('strong', { className: 'failed' }, num(counts.failed)))),
    h('p', { className: 'age muted' },
      h('time', { datetime: job.created_at, title: when(job.created_at) }, t.age(ago(job.created_at)))));
}

/** A stream body folded into a listing item: status, progress and, once finished, the counts. */
function merged(job, body) {
  const next = { ...job, status: body.status };
  if (body.progress) next.progress = { current: body.progress.current, total: body.progress.total };
  if (body.result) {
    next.progress = { current: body.result.total, total: body.result.total };
    next.counts = { successful: body.result.successful, failed: body.result.failed };
  }
  return next;
}

/** Show the list view in `main` for the hash's query; everything stops when `signal` aborts. */
export function showJobs(main, params, signal) {
  const query = listQuery(params);
  const filterKey = JSON.stringify([query.status, query.label]);
  if (trail.filter !== filterKey || !query.page_token) trail = { filter: filterKey, tokens: [] };
  const filtered = query.status.length > 0 || query.label.length > 0;
  const results = h('div', { id: 'jobs-results', 'aria-busy': 'true' }, loading());
  const live = new Map(); // job id -> AbortController of its stream
  const jobs = new Map(); // job id -> listing item
  let list = null;
  let refreshing = 0;
  let lastRefresh = 0;

  replace(main, h('section', { className: 'jobs-view', 'aria-labelledby': 'jobs-title' },
    h('div', { className: 'title-row' },
      h('h1', { id: 'jobs-title', tabindex: '-1' }, t.jobsTitle),
      h('button', { type: 'button', id: 'refresh', className: 'secondary', onclick: () => load() }, t.refresh)),
    h('details', { className: 'tools', open: filtered || innerWidth >= 900 },
      h('summary', {}, t.filters), h('div', { className: 'tools-inner' }, filterForm(query), openForm())),
    results));

  function redraw(job) {
    const old = list && list.querySelector(`li[data-job-id="${CSS.escape(job.job_id)}"]`);
    if (!old) return;
    const hadFocus = old.contains(document.activeElement);
    const row = jobRow(job);
    old.replaceWith(row);
    if (hadFocus) row.querySelector('a').focus();
  }

  function scheduleRefresh() {
    if (refreshing) return;
    const wait = Math.max(300, lastRefresh + REFRESH_EVERY - Date.now());
    refreshing = setTimeout(() => { refreshing = 0; load(true); }, wait);
  }

  function watch() {
    for (const [id, stop] of live) {
      if (!jobs.has(id) || TERMINAL.has(jobs.get(id).status)) { stop.abort(); live.delete(id); }
    }
    for (const job of jobs.values()) {
      if (live.size >= MAX_STREAMS) break;
      if (TERMINAL.has(job.status) || live.has(job.job_id)) continue;
      const stop = new AbortController();
      signal.addEventListener('abort', () => stop.abort(), { once: true });
      live.set(job.job_id, stop);
      follow(job.job_id, {
        signal: stop.signal,
        onState: (on) => {
          const item = jobs.get(job.job_id);
          if (item && item.live !== on) { item.live = on; redraw(item); }
        },
        onBody: (body) => {
          const item = jobs.get(job.job_id);
          if (!item) return;
          const next = merged(item, body);
          const same = next.status === item.status && JSON.stringify(next.progress) === JSON.stringify(item.progress);
          if (same && !body.result) return; // what the page shows already (a stream's first body)
          next.live = !TERMINAL.has(body.status);
          jobs.set(job.job_id, next);
          redraw(next);
          if (body.progress) announce(`${job.job_id}: ${t.progressOf(body.progress.current, body.progress.total)}`);
          else announce(`${job.job_id}: ${statusName(body.status)}`);
          scheduleRefresh();
        },
      }).finally(() => {
        if (live.get(job.job_id) === stop) live.delete(job.job_id);
        if (!signal.aborted) watch();
      });
    }
  }

  async function load(quiet = false) {
    lastRefresh = Date.now();
    if (!quiet) { results.setAttribute('aria-busy', 'true'); replace(results, loading()); }
    let page;
    try {
      page = await request('jobs', { query, signal });
    } catch (error) {
      if (signal.aborted) return;
      results.removeAttribute('aria-busy');
      if (quiet) return; // keep what is shown; the next news tries again
      const shown = [405, 404].includes(error.status) ? h('p', { className: 'state error', role: 'alert' }, t.eList) : failure(error, () => load());
      replace(results, shown);
      return;
    }
    if (signal.aborted) return;
    for (const job of page.jobs) job.live = live.has(job.job_id) && (jobs.get(job.job_id) || {}).live;
    jobs.clear();
    for (const job of page.jobs) jobs.set(job.job_id, job);
    drawPage(page);
    watch();
    if (firstPaint) { firstPaint = false; performance.mark('jobs-list-rendered'); }
  }

  function drawPage(page) {
    results.removeAttribute('aria-busy');
    if (!page.jobs.length && !query.page_token) {
      list = null;
      replace(results, empty(filtered ? t.noJobs : t.noJobsYet));
      return;
    }
    const focusedRow = document.activeElement?.closest?.('#job-list > li')?.dataset.jobId;
    list = h('ol', { id: 'job-list', className: 'jobs', 'aria-label': t.jobsTitle }, page.jobs.map(jobRow));
    const pageNumber = trail.tokens.length + 1;
    const pager = h('nav', { className: 'pager', 'aria-label': t.page(pageNumber) },
      h('button', {
        type: 'button', id: 'newer', className: 'secondary', disabled: pageNumber === 1,
        onclick: () => { const previous = trail.tokens.pop(); location.hash = hashFor({ ...query, page_token: previous }); },
      }, t.newer),
      h('span', { className: 'muted' }, t.page(pageNumber)),
      h('button', {
        type: 'button', id: 'older', className: 'secondary', disabled: !page.next_page_token,
        onclick: () => { trail.tokens.push(query.page_token); location.hash = hashFor({ ...query, page_token: page.next_page_token }); },
      }, t.older));
    replace(results, list, pager);
    if (focusedRow) list.querySelector(`li[data-job-id="${CSS.escape(focusedRow)}"] a`)?.focus();
  }

  const ticking = setInterval(() => { for (const job of jobs.values()) redraw(job); }, 30000);
  signal.addEventListener('abort', () => { clearInterval(ticking); clearTimeout(refreshing); }, { once: true });
  load();
}
