// Orders: filtered list (newest first, paged) and one order's lines, payments, history and
// refunds, with the refund action (SPEC §14) behind a confirmation dialog.

import { get, newKey, post } from '../api.js';
import { badge, busy, dialog, field, h, intValue, money, notify, num, pager, table, toUtc, when } from '../ui.js';

const STATUSES = ['PENDING', 'PAID', 'CONFIRMED', 'PARTIALLY_REFUNDED', 'REFUNDED', 'CANCELLED', 'EXPIRED'];
const REFUNDABLE = ['PAID', 'CONFIRMED', 'PARTIALLY_REFUNDED'];

export async function render(view, { id, params }) {
  if (id) return renderOrder(view, id);
  return renderList(view, params);
}

function renderList(view, params) {
  const status = h('select', { name: 'status' }, h('option', { value: '' }, 'Any status'), STATUSES.map((s) => h('option', { value: s, selected: params.get('status') === s }, s)));
  const userId = h('input', { type: 'number', name: 'userId', min: 1, value: params.get('userId') || '' });
  const from = h('input', { type: 'datetime-local', name: 'from' });
  const to = h('input', { type: 'datetime-local', name: 'to' });
  const list = h('div');
  const form = h('form.inline.card', { 'aria-label': 'Order filters' },
    field('Status', status), field('Member id', userId), field('Created from', from), field('Created before', to),
    h('button', { type: 'submit' }, 'Apply filters'));
  view.append(h('h1', 'Orders'), form, h('section.card', { 'aria-label': 'Orders' }, list));
  let paged;
  const filters = () => ({ status: status.value, userId: intValue(userId), from: toUtc(from.value), to: toUtc(to.value) });
  function start() {
    const f = filters();
    paged = pager(list, {
      label: 'Orders',
      load: (cursor) => get('/admin/orders', { ...f, cursor, limit: 20 }),
      render: (items) => table([
        { label: 'Order', cell: (o) => h('a', { href: `#/orders/${o.id}` }, `#${o.id}`) },
        { label: 'Member', cell: (o) => h('a', { href: `#/members/${o.userId}` }, `#${o.userId}`) },
        { label: 'Status', cell: (o) => badge(o.status) },
        { label: 'Total', num: true, cell: (o) => money(o.total) },
        { label: 'Discount', num: true, cell: (o) => money(o.discount) },
        { label: 'Created', cell: (o) => when(o.createdAt) },
        { label: 'Paid', cell: (o) => when(o.paidAt) },
      ], items, { empty: 'No orders match these filters.' }),
    });
  }
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    start();
  });
  start();
  return paged;
}

async function renderOrder(view, id) {
  const order = await get(`/orders/${encodeURIComponent(id)}`);
  const refunds = Array.isArray(order.refunds) ? order.refunds : null;
  const refundable = REFUNDABLE.includes(order.status);
  const refundButton = h('button.danger', { type: 'button', id: 'refund-open', disabled: !refundable }, 'Refund…');
  refundButton.addEventListener('click', () => openRefund(order, refunds || [], () => rerender(view, id)));
  view.append(
    h('p', h('a', { href: '#/orders' }, '← All orders')),
    h('h1', `Order #${order.id} `, badge(order.status)),
    h('div.grid',
      h('section.card', { 'aria-labelledby': 'o-summary' },
        h('h2#o-summary', 'Summary'),
        h('dl.facts',
          h('dt', 'Member'), h('dd', h('a', { href: `#/members/${order.userId}` }, `#${order.userId}`)),
          h('dt', 'Subtotal'), h('dd', money(order.subtotal)),
          h('dt', 'Discount'), h('dd', money(order.discount), order.couponId ? ` (coupon campaign #${order.couponId})` : ''),
          h('dt', 'Total'), h('dd', h('strong', money(order.total))),
          h('dt', 'Created'), h('dd', when(order.createdAt)),
          h('dt', 'Paid'), h('dd', when(order.paidAt)),
          order.confirmedAt ? [h('dt', 'Confirmed'), h('dd', when(order.confirmedAt))] : null,
          order.status === 'PENDING' ? [h('dt', 'Holds stock until'), h('dd', when(order.expiresAt))] : null)),
      h('section.card', { 'aria-labelledby': 'o-actions' },
        h('h2#o-actions', 'Refund'),
        h('p.muted', refundable
          ? 'Give the member back what they paid for some or all units, as balance. Stock can be put back.'
          : `A ${order.status} order cannot be refunded.`),
        h('div.actions', refundButton))),
    h('section.card', { 'aria-labelledby': 'o-lines' }, h('h2#o-lines', 'Lines'), table([
      { label: 'Product', cell: (l) => `#${l.productId} ${l.name}` },
      { label: 'Unit price', num: true, cell: (l) => money(l.unitPrice) },
      { label: 'Quantity', num: true, cell: (l) => num(l.quantity) },
      { label: 'Refunded', num: true, cell: (l) => num(refundedUnits(refunds || [], l.productId)) },
      { label: 'Line total', num: true, cell: (l) => money(l.lineTotal) },
    ], order.items)),
    h('section.card', { 'aria-labelledby': 'o-payments' }, h('h2#o-payments', 'Payments'), table([
      { label: 'Payment', cell: (p) => `#${p.id}` },
      { label: 'Status', cell: (p) => badge(p.status, p.status === 'SUCCEEDED' ? 'PAID' : 'CANCELLED') },
      { label: 'Amount', num: true, cell: (p) => money(p.amount) },
      { label: 'Failure', cell: (p) => p.failureCode || '—' },
      { label: 'At', cell: (p) => when(p.createdAt) },
    ], order.payments, { empty: 'No payment attempts.' })),
    h('section.card', { 'aria-labelledby': 'o-refunds' }, h('h2#o-refunds', 'Refunds'), refunds === null
      ? h('p.muted', 'This server does not report refunds.')
      : table([
        { label: 'Refund', cell: (r) => `#${r.id}` },
        { label: 'Amount', num: true, cell: (r) => money(r.amount) },
        { label: 'Units', cell: (r) => (r.lines || []).map((l) => `#${l.productId} × ${l.quantity}`).join(', ') },
        { label: 'Restocked', cell: (r) => (r.restock ? 'Yes' : 'No') },
        { label: 'Reason', cell: (r) => r.reason || '—' },
        { label: 'At', cell: (r) => when(r.createdAt) },
      ], refunds, { empty: 'No refunds.' })),
    h('section.card', { 'aria-labelledby': 'o-history' }, h('h2#o-history', 'History'), table([
      { label: 'From', cell: (c) => (c.from ? badge(c.from) : '—') },
      { label: 'To', cell: (c) => badge(c.to) },
      { label: 'Reason', cell: (c) => c.reason },
      { label: 'At', cell: (c) => when(c.at) },
    ], order.history)),
  );
}

async function rerender(view, id) {
  view.replaceChildren();
  await renderOrder(view, id);
}

function refundedUnits(refunds, productId) {
  let n = 0;
  for (const r of refunds) for (const l of r.lines || []) if (l.productId === productId) n += l.quantity;
  return n;
}

function openRefund(order, refunds, done) {
  // One key per dialog: a confirm retried after a lost answer cannot refund twice.
  const key = newKey();
  const whole = h('input', { type: 'radio', name: 'scope', value: 'all', checked: true, id: 'refund-all' });
  const some = h('input', { type: 'radio', name: 'scope', value: 'lines', id: 'refund-lines' });
  const qty = new Map();
  const lineInputs = order.items.map((l) => {
    const left = l.quantity - refundedUnits(refunds, l.productId);
    const input = h('input', { type: 'number', min: 0, max: left, value: left, name: `qty-${l.productId}`, disabled: true });
    qty.set(l.productId, input);
    return field(`${l.name} (#${l.productId}), units to refund (${left} left)`, input);
  });
  const toggle = () => { for (const i of qty.values()) i.disabled = !some.checked; };
  whole.addEventListener('change', toggle);
  some.addEventListener('change', toggle);
  const restock = h('input', { type: 'checkbox', name: 'restock', checked: true, id: 'refund-restock' });
  const reason = h('textarea', { name: 'reason', required: true, maxlength: 500 });
  dialog({
    title: `Refund order #${order.id}?`,
    confirm: 'Refund',
    danger: true,
    body: h('div',
      h('p', `The member #${order.userId} gets the refunded amount back as balance at once. The order total was ${money(order.total)}; a used coupon is not given back.`),
      h('fieldset', h('legend', 'What to refund'),
        h('div.check', whole, h('label', { for: 'refund-all' }, 'Everything not refunded yet')),
        h('div.check', some, h('label', { for: 'refund-lines' }, 'Some units'))),
      lineInputs,
      h('div.check', restock, h('label', { for: 'refund-restock' }, 'Put the units back in stock')),
      field('Reason (kept with the refund)', reason)),
    submit: async () => {
      const body = { restock: restock.checked, reason: reason.value.trim() };
      if (some.checked) {
        body.lines = [...qty.entries()]
          .map(([productId, input]) => ({ productId, quantity: Number(input.value) }))
          .filter((l) => l.quantity > 0);
      }
      let refund;
      try {
        refund = await post(`/admin/orders/${order.id}/refunds`, body, { idempotencyKey: key });
      } catch (err) {
        if (err.code === 'NOT_FOUND' || err.code === 'METHOD_NOT_ALLOWED') {
          throw new Error('This shopd server cannot refund orders (it has no refund endpoint). Upgrade shopd to refund from the console.');
        }
        throw err;
      }
      notify(`Refunded ${money(refund.amount)} to member #${order.userId}.`);
      await done();
    },
  });
}
