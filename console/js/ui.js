// Small DOM helpers: element builder, notices, dialogs, tables, pagers, formatting.

/** h('tag.class#id', {attrs}, ...children). Children: strings, nodes, arrays, null. */
export function h(spec, attrs, ...children) {
  const [, tag = 'div', rest = ''] = spec.match(/^([a-z0-9-]*)(.*)$/i) || [];
  const el = document.createElement(tag || 'div');
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === '.') el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

let fieldSeq = 0;
/** A labelled control: field('Name', input). Gives the control an id if it has none. */
export function field(label, control, hint) {
  if (!control.id) control.id = `f${++fieldSeq}`;
  const hintEl = hint ? h('span.muted', { id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div.field', h('label', { for: control.id }, label), control, hintEl);
}

const won = new Intl.NumberFormat('en-US');
export function money(n) {
  if (n === null || n === undefined) return '—';
  return `₩${won.format(n)}`;
}
export function num(n) {
  return n === null || n === undefined ? '—' : won.format(n);
}
export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'short' });
}
export function badge(text, cls) {
  return h('span.badge', { class: `badge ${cls || text}` }, text);
}

/** An API error in plain words: the server's message, with its code for reference. */
export function describe(err) {
  if (err && err.code) {
    const field = err.details?.field ? ` (field: ${err.details.field})` : '';
    return `${err.message}${field} [${err.code}]`;
  }
  return String(err?.message || err);
}

export function notify(message, kind = 'ok') {
  const box = document.getElementById('notices');
  const close = h('button.small.secondary', { type: 'button', 'aria-label': 'Dismiss message' }, 'Dismiss');
  const note = h(`div.notice.${kind}`, { role: kind === 'error' ? 'alert' : null }, h('span', message), close);
  close.addEventListener('click', () => note.remove());
  box.replaceChildren(note);
  if (kind === 'ok') setTimeout(() => note.remove(), 8000);
}

export function showError(err) {
  notify(describe(err), 'error');
}

/** Run an async action from a button: disabled while running, errors shown in plain words. */
export async function busy(button, action) {
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (err) {
    showError(err);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/**
 * A modal dialog. `build(close)` returns the body; `submit` (async, gets the form) runs on the
 * confirm button; resolving closes the dialog. Errors stay in the dialog, in plain words.
 */
export function dialog({ title, body, confirm = 'Save', danger = false, submit }) {
  const error = h('p.error-text', { role: 'alert' });
  const form = h('form', { method: 'dialog' });
  const confirmButton = h(danger ? 'button.danger' : 'button', { type: 'submit', value: 'confirm' }, confirm);
  const cancel = h('button.secondary', { type: 'button' }, 'Cancel');
  const titleId = `dlg${++fieldSeq}`;
  const dlg = h('dialog', { 'aria-labelledby': titleId }, form);
  form.append(h('h2', { id: titleId }, title), body, error, h('div.actions', cancel, confirmButton));
  cancel.addEventListener('click', () => dlg.close());
  dlg.addEventListener('close', () => dlg.remove());
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    confirmButton.disabled = true;
    error.textContent = '';
    try {
      await submit(form);
      dlg.close();
    } catch (err) {
      error.textContent = describe(err);
    } finally {
      confirmButton.disabled = false;
    }
  });
  document.body.append(dlg);
  dlg.showModal();
  return dlg;
}

/** A table: columns [{label, num?, cell(row) → node|string}]. */
export function table(columns, rows, { caption, empty = 'Nothing to show.' } = {}) {
  if (!rows.length) return h('p.muted', empty);
  return h('table',
    caption ? h('caption', caption) : null,
    h('thead', h('tr', columns.map((c) => h(c.num ? 'th.num' : 'th', { scope: 'col' }, c.label)))),
    h('tbody', rows.map((r) => h('tr', columns.map((c) => h(c.num ? 'td.num' : 'td', c.cell(r)))))));
}

/**
 * A cursor-paged list: load(cursor) → {items, nextCursor}; render(items) → node. Keeps the
 * cursors seen so "Previous" goes back without the API having to page backwards.
 */
export function pager(container, { load, render, label }) {
  const cursors = [null];
  let index = 0;
  const body = h('div');
  const prev = h('button.secondary.small', { type: 'button' }, 'Previous page');
  const next = h('button.secondary.small', { type: 'button' }, 'Next page');
  const where = h('span.muted');
  const nav = h('nav.pager', { 'aria-label': `${label} pages` }, prev, where, next);
  container.replaceChildren(body, nav);
  async function show() {
    body.setAttribute('aria-busy', 'true');
    try {
      const page = await load(cursors[index]);
      body.replaceChildren(render(page.items));
      cursors[index + 1] = page.nextCursor || undefined;
      prev.disabled = index === 0;
      next.disabled = !page.nextCursor;
      // One page only: no pager to distract.
      nav.hidden = index === 0 && !page.nextCursor;
      where.textContent = `Page ${index + 1}`;
    } catch (err) {
      body.replaceChildren(h('p.error-text', { role: 'alert' }, describe(err)));
    } finally {
      body.removeAttribute('aria-busy');
    }
  }
  prev.addEventListener('click', () => { if (index > 0) { index -= 1; show(); } });
  next.addEventListener('click', () => { if (cursors[index + 1]) { index += 1; show(); } });
  show();
  return { reload: show, first: () => { index = 0; cursors.length = 1; return show(); } };
}

/** A `datetime-local` value (local time) → RFC 3339 UTC, or undefined when empty. */
export function toUtc(localValue) {
  if (!localValue) return undefined;
  const d = new Date(localValue);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

/** A number input's value, or undefined when empty. */
export function intValue(input) {
  const v = input.value.trim();
  return v === '' ? undefined : Number(v);
}
