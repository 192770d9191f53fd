// The dashboard's shell: sign-in, the hash router (#/jobs, #/jobs/{id}), the offline banner.

import { apiKey, signIn, signOut } from './api.js';
import { h, replace } from './dom.js';
import { lang, t } from './i18n.js';
import { showJob } from './job.js';
import { showJobs } from './jobs.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let current = new AbortController();

function signInView() {
  const input = h('input', {
    id: 'api-key', name: 'api-key', type: 'password', required: true, autocomplete: 'off',
    spellcheck: 'false', 'aria-describedby': 'key-help',
  });
  const form = h('form', { id: 'sign-in', className: 'card narrow' },
    h('h1', { tabindex: '-1' }, t.signInTitle),
    h('p', { id: 'key-help', className: 'muted' }, t.signInHelp),
    h('label', { for: 'api-key' }, t.keyLabel), input,
    h('button', { type: 'submit' }, t.signIn));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!input.value.trim()) return;
    signIn(input.value);
    input.value = '';
    if (!location.hash || location.hash === '#/') location.hash = '#/jobs';
    else route();
  });
  return form;
}

function drawNav() {
  if (!apiKey()) {
    nav.replaceChildren();
    return;
  }
  replace(nav,
    h('a', { href: '#/jobs', id: 'nav-jobs' }, t.jobs),
    h('button', {
      type: 'button', id: 'sign-out', className: 'link',
      onclick: () => { signOut(); signedOut(); },
    }, t.signOut));
}

/** Show the view the hash names, ending the previous view's requests and streams. */
function route() {
  current.abort();
  current = new AbortController();
  drawNav();
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = hash.split('?');
  if (!apiKey()) {
    replace(main, signInView());
  } else {
    const match = path.match(/^\/jobs\/(.+)$/);
    if (match) showJob(main, decodeURIComponent(match[1]), current.signal);
    else showJobs(main, new URLSearchParams(query), current.signal);
  }
  // After a navigation, the new view's heading takes the focus, so a screen reader reads it.
  const first = main.querySelector('#api-key') || (route.shown && main.querySelector('h1'));
  if (first) first.focus();
  route.shown = true;
}

function signedOut() {
  if (location.hash && location.hash !== '#/') location.hash = '#/';
  else route();
}

function showConnectivity() {
  const banner = document.getElementById('offline');
  banner.textContent = t.offline;
  banner.hidden = navigator.onLine;
}

document.documentElement.lang = lang;
document.getElementById('skip-link').textContent = t.skip;
addEventListener('hashchange', route);
addEventListener('jobtracker:signed-out', signedOut);
addEventListener('online', () => { showConnectivity(); route(); });
addEventListener('offline', showConnectivity);
// A page kept in the back/forward cache would hold its streams' connections: end them, and
// start again if the page is shown from the cache.
addEventListener('pagehide', () => current.abort());
addEventListener('pageshow', (event) => { if (event.persisted) route(); });
showConnectivity();
route();
