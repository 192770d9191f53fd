// The states every view shows plainly: loading, empty, and what went wrong.

import { signOut } from './api.js';
import { h } from './dom.js';
import { t } from './i18n.js';

/** "Loading…", announced politely. */
export function loading() {
  return h('p', { className: 'state loading', role: 'status' }, t.loading);
}

/** Nothing to show, and why. */
export function empty(text) {
  return h('p', { className: 'state empty' }, text);
}

/** What the user should read for an ApiError (status 0: the server was not reached). */
export function explain(error) {
  if (error.status === 0) return t.unreachable;
  const known = { 401: t.e401, 403: t.e403, 404: t.e404, 409: t.e409, 410: t.e410 };
  return known[error.status] || t.eOther(error.status, error.detail);
}

/** An alert saying what went wrong, with the way out: sign in again (401) or try again. */
export function failure(error, retry) {
  const box = h('div', { className: `state error status-${error.status}`, role: 'alert' },
    h('p', {}, explain(error)));
  if (error.status === 401) {
    box.append(h('button', {
      type: 'button', onclick: () => { signOut(); dispatchEvent(new Event('jobtracker:signed-out')); },
    }, t.signIn));
  } else if (retry && (error.status === 0 || error.status >= 500)) {
    box.append(h('button', { type: 'button', onclick: retry }, t.retry));
  }
  return box;
}
