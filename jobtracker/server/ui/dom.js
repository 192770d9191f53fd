// Building the page from data, safely: every value from the API goes in as text, never as HTML.

/** An element with attributes and children; strings and numbers become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'className') {
      el.className = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Append children (nested arrays allowed; null and false skipped) to `el`. */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace everything inside `el` with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A `<progress>` labelled by visible text, with its numbers as text for those without a bar. */
export function progressBar(id, label, current, total) {
  // Never indeterminate: an animated bar would say "working" about a job that may not be.
  const known = Number.isFinite(total) && total > 0;
  const bar = h('progress', {
    id, max: known ? total : 1, value: known ? Math.min(current, total) : 0,
    'aria-labelledby': `${id}-label`,
  });
  return h('div', { className: 'progress' },
    h('span', { id: `${id}-label`, className: 'progress-label' }, label), bar);
}

let announceTimer = 0;
let lastAnnounced = 0;

/** Tell screen readers (the aria-live region) what changed; at most one message per 5 s. */
export function announce(message) {
  const region = document.getElementById('announcer');
  const wait = Math.max(0, lastAnnounced + 5000 - Date.now());
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    lastAnnounced = Date.now();
    region.textContent = message;
  }, wait);
}
