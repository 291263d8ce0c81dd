// Coupon campaigns: every campaign with issued/total, create, edit, close.

import { get, newKey, patch, post } from '../api.js';
import { badge, dialog, field, h, intValue, money, notify, num, pager, table, toUtc, when } from '../ui.js';

function state(c) {
  const now = Date.now();
  if (c.closedAt) return 'closed';
  if (new Date(c.issueStartsAt).getTime() > now) return 'upcoming';
  if (new Date(c.issueEndsAt).getTime() <= now) return 'ended';
  if (c.issuedQuantity >= c.totalQuantity) return 'sold out';
  return 'open';
}

function discountText(d) {
  if (d.type === 'PERCENT') return `${d.value}% off${d.maxAmount ? ` (up to ${money(d.maxAmount)})` : ''}`;
  return `${money(d.value)} off`;
}

export async function render(view) {
  const list = h('div');
  let paged;
  view.append(
    h('h1', 'Coupon campaigns'),
    createForm(() => paged.reload()),
    h('section.card', { 'aria-labelledby': 'c-list' }, h('h2#c-list', 'Campaigns'), list),
  );
  paged = pager(list, {
    label: 'Campaigns',
    load: (cursor) => get('/admin/coupons', { cursor, limit: 20 }),
    render: (items) => table([
      { label: 'Id', cell: (c) => `#${c.id}` },
      { label: 'Name', cell: (c) => c.name },
      { label: 'Discount', cell: (c) => discountText(c.discount) },
      { label: 'Minimum order', num: true, cell: (c) => money(c.minOrderAmount) },
      { label: 'Issued / total', cell: (c) => h('span.nowrap',
        h('progress', { max: c.totalQuantity, value: c.issuedQuantity, 'aria-label': `${c.name}: ${c.issuedQuantity} of ${c.totalQuantity} issued` }),
        ` ${num(c.issuedQuantity)} / ${num(c.totalQuantity)}`) },
      { label: 'Issue window', cell: (c) => `${when(c.issueStartsAt)} – ${when(c.issueEndsAt)}` },
      { label: 'State', cell: (c) => badge(state(c), state(c).replace(' ', '-')) },
      { label: 'Actions', cell: (c) => h('div.actions',
        h('button.small.secondary', { type: 'button', 'aria-label': `Edit campaign ${c.name}`, onclick: () => edit(c, () => paged.reload()) }, 'Edit'),
        c.closedAt ? null : h('button.small.danger', { type: 'button', 'aria-label': `Close campaign ${c.name}`, onclick: () => close(c, () => paged.reload()) }, 'Close')) },
    ], items, { empty: 'No campaigns yet. Create one above.' }),
  });
}

function localInput(name, date) {
  const input = h('input', { type: 'datetime-local', name });
  if (date) {
    const d = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
    input.value = d.toISOString().slice(0, 16);
  }
  return input;
}

function createForm(done) {
  const name = h('input', { name: 'name', required: true, maxlength: 200 });
  const type = h('select', { name: 'type' }, h('option', { value: 'FIXED' }, 'Fixed amount (₩)'), h('option', { value: 'PERCENT' }, 'Percent'));
  const value = h('input', { type: 'number', name: 'value', min: 1, required: true });
  const maxAmount = h('input', { type: 'number', name: 'maxAmount', min: 1 });
  const minOrder = h('input', { type: 'number', name: 'minOrderAmount', min: 0, value: 0 });
  const total = h('input', { type: 'number', name: 'totalQuantity', min: 1, required: true, value: 100 });
  const starts = localInput('issueStartsAt');
  const ends = localInput('issueEndsAt', new Date(Date.now() + 7 * 86400000));
  ends.required = true;
  const validDays = h('input', { type: 'number', name: 'validDays', min: 1, max: 3650, value: 7, required: true });
  const error = h('p.error-text', { role: 'alert' });
  const button = h('button', { type: 'submit' }, 'Create campaign');
  let key = newKey();
  const form = h('form.card', { 'aria-labelledby': 'c-new' },
    h('h2#c-new', 'New campaign'),
    h('div.form-row',
      field('Name', name), field('Discount type', type), field('Discount value', value), field('Largest discount (₩, percent only)', maxAmount),
      field('Minimum order (₩)', minOrder), field('Coupons to issue', total), field('Issue from (empty: now)', starts),
      field('Issue until', ends), field('Valid days after issue', validDays), button),
    error);
  form.addEventListener('input', () => { key = newKey(); });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    button.disabled = true;
    try {
      const discount = { type: type.value, value: intValue(value) };
      if (type.value === 'PERCENT' && intValue(maxAmount)) discount.maxAmount = intValue(maxAmount);
      const body = {
        name: name.value, discount, minOrderAmount: intValue(minOrder) ?? 0, totalQuantity: intValue(total),
        issueEndsAt: toUtc(ends.value), validDays: intValue(validDays),
      };
      if (starts.value) body.issueStartsAt = toUtc(starts.value);
      const c = await post('/admin/coupons', body, { idempotencyKey: key });
      notify(`Campaign #${c.id} “${c.name}” created.`);
      key = newKey();
      await done();
    } catch (err) {
      error.textContent = `${err.message}${err.details?.field ? ` (field: ${err.details.field})` : ''}${err.code ? ` [${err.code}]` : ''}`;
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function edit(c, done) {
  const name = h('input', { name: 'name', value: c.name, required: true, maxlength: 200 });
  const total = h('input', { type: 'number', name: 'totalQuantity', min: c.issuedQuantity || 1, value: c.totalQuantity, required: true });
  const ends = localInput('issueEndsAt', new Date(c.issueEndsAt));
  dialog({
    title: `Edit campaign #${c.id}`,
    body: h('div', field('Name', name), field('Coupons to issue', total, `${c.issuedQuantity} already issued: the total cannot go below that.`), field('Issue until', ends)),
    submit: async () => {
      const body = {};
      if (name.value !== c.name) body.name = name.value;
      if (intValue(total) !== c.totalQuantity) body.totalQuantity = intValue(total);
      const end = toUtc(ends.value);
      if (end && new Date(end).getTime() !== new Date(c.issueEndsAt).getTime()) body.issueEndsAt = end;
      if (!Object.keys(body).length) return;
      await patch(`/admin/coupons/${c.id}`, body);
      notify(`Campaign #${c.id} saved.`);
      await done();
    },
  });
}

function close(c, done) {
  dialog({
    title: `Close campaign “${c.name}”?`,
    confirm: 'Close campaign',
    danger: true,
    body: h('p', `No more coupons will be issued (${num(c.issuedQuantity)} of ${num(c.totalQuantity)} were). Coupons already issued stay valid until they expire.`),
    submit: async () => {
      await post(`/admin/coupons/${c.id}/close`);
      notify(`Campaign #${c.id} closed.`);
      await done();
    },
  });
}
