// Products: every status, create, edit name/price/status, restock or correct stock.

import { get, newKey, patch, post } from '../api.js';
import { badge, dialog, field, h, intValue, money, notify, num, pager, table } from '../ui.js';

const STATUSES = ['ON_SALE', 'SUSPENDED', 'DISCONTINUED'];

export async function render(view) {
  const statusFilter = h('select', { name: 'statusFilter' }, h('option', { value: '' }, 'Every status'), STATUSES.map((s) => h('option', { value: s }, s)));
  const list = h('div');
  view.append(
    h('h1', 'Products'),
    createForm(() => paged.reload()),
    h('section.card', { 'aria-labelledby': 'p-list' },
      h('h2#p-list', 'Catalogue'),
      h('form.inline', { onsubmit: (e) => e.preventDefault() }, field('Show', statusFilter)),
      list),
  );
  let paged = start();
  function start() {
    return pager(list, {
      label: 'Products',
      load: (cursor) => get('/admin/products', { status: statusFilter.value, cursor, limit: 20 }),
      render: (items) => table([
        { label: 'Id', cell: (p) => `#${p.id}` },
        { label: 'Name', cell: (p) => p.name },
        { label: 'Price', num: true, cell: (p) => money(p.price) },
        { label: 'Stock', num: true, cell: (p) => num(p.stock) },
        { label: 'Status', cell: (p) => badge(p.status) },
        { label: 'Actions', cell: (p) => h('div.actions',
          h('button.small.secondary', { type: 'button', 'aria-label': `Edit ${p.name}`, onclick: () => edit(p, () => paged.reload()) }, 'Edit'),
          h('button.small.secondary', { type: 'button', 'aria-label': `Change stock of ${p.name}`, onclick: () => restock(p, () => paged.reload()) }, 'Stock')) },
      ], items, { empty: 'No products yet. Add one above.' }),
    });
  }
  statusFilter.addEventListener('change', () => { paged = start(); });
}

function createForm(done) {
  const name = h('input', { name: 'name', required: true, maxlength: 200 });
  const price = h('input', { type: 'number', name: 'price', min: 0, required: true });
  const stock = h('input', { type: 'number', name: 'stock', min: 0, value: 0, required: true });
  const status = h('select', { name: 'status' }, STATUSES.map((s) => h('option', { value: s }, s)));
  const description = h('input', { name: 'description', maxlength: 4000 });
  const error = h('p.error-text', { role: 'alert' });
  const button = h('button', { type: 'submit' }, 'Add product');
  let key = newKey();
  const form = h('form.card', { 'aria-labelledby': 'p-new' },
    h('h2#p-new', 'New product'),
    h('div.form-row', field('Name', name), field('Price (₩)', price), field('Initial stock', stock), field('Status', status), field('Description', description), button),
    error);
  for (const el of [name, price, stock, status, description]) el.addEventListener('input', () => { key = newKey(); });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    button.disabled = true;
    try {
      const body = { name: name.value, price: intValue(price), stock: intValue(stock), status: status.value };
      if (description.value.trim()) body.description = description.value;
      const p = await post('/admin/products', body, { idempotencyKey: key });
      notify(`Product #${p.id} “${p.name}” added.`);
      form.reset();
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

function edit(p, done) {
  const name = h('input', { name: 'name', value: p.name, required: true, maxlength: 200 });
  const price = h('input', { type: 'number', name: 'price', min: 0, value: p.price, required: true });
  const status = h('select', { name: 'status' }, STATUSES.map((s) => h('option', { value: s, selected: s === p.status }, s)));
  dialog({
    title: `Edit product #${p.id}`,
    body: h('div', field('Name', name), field('Price (₩)', price, 'Open orders keep the price they were placed at.'), field('Status', status)),
    submit: async () => {
      const body = {};
      if (name.value !== p.name) body.name = name.value;
      if (intValue(price) !== p.price) body.price = intValue(price);
      if (status.value !== p.status) body.status = status.value;
      if (!Object.keys(body).length) return;
      const updated = await patch(`/admin/products/${p.id}`, body);
      notify(`Product #${updated.id} saved.`);
      await done();
    },
  });
}

function restock(p, done) {
  const key = newKey();
  const delta = h('input', { type: 'number', name: 'delta', required: true, value: 10 });
  dialog({
    title: `Stock of “${p.name}”`,
    confirm: 'Apply',
    body: h('div', h('p', `In stock now: ${num(p.stock)}.`), field('Change (positive adds, negative removes)', delta)),
    submit: async () => {
      const updated = await post(`/admin/products/${p.id}/stock`, { delta: intValue(delta) }, { idempotencyKey: key });
      notify(`Stock of “${updated.name}” is now ${num(updated.stock)}.`);
      await done();
    },
  });
}
