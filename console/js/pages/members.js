// Members: name search with balances; one member's balance, ledger and orders; token reissue.

import { get, post } from '../api.js';
import { badge, dialog, field, h, money, notify, pager, table, when } from '../ui.js';

export async function render(view, { id, params }) {
  if (id) return renderMember(view, id);
  const q = h('input', { type: 'search', name: 'q', value: params.get('q') || '', maxlength: 100 });
  const list = h('div');
  const form = h('form.inline.card', { role: 'search', 'aria-label': 'Members' }, field('Name contains', q), h('button', { type: 'submit' }, 'Search'));
  view.append(h('h1', 'Members'), form, h('section.card', { 'aria-label': 'Members found' }, list));
  const start = () => pager(list, {
    label: 'Members',
    load: (cursor) => get('/admin/users', { q: q.value.trim(), cursor, limit: 20 }),
    render: (items) => table([
      { label: 'Member', cell: (m) => h('a', { href: `#/members/${m.id}` }, `#${m.id} ${m.name}`) },
      { label: 'Balance', num: true, cell: (m) => money(m.balance) },
      { label: 'Joined', cell: (m) => when(m.createdAt) },
    ], items, { empty: 'No member matches.' }),
  });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    start();
  });
  start();
}

async function renderMember(view, id) {
  const userId = encodeURIComponent(id);
  const [user, balance] = await Promise.all([get(`/users/${userId}`), get(`/users/${userId}/balance`)]);
  const ledger = h('div');
  const orders = h('div');
  const reissue = h('button.danger', { type: 'button', id: 'reissue-token' }, 'Issue a new token…');
  reissue.addEventListener('click', () => reissueToken(user));
  view.append(
    h('p', h('a', { href: '#/members' }, '← All members')),
    h('h1', `${user.name} (#${user.id})`),
    h('div.tiles',
      h('div.tile#member-balance', h('div.label', 'Balance'), h('div.value', money(balance.balance))),
      h('div.tile', h('div.label', 'Member since'), h('div.value', when(user.createdAt)))),
    h('section.card', { 'aria-labelledby': 'm-token' },
      h('h2#m-token', 'Token'),
      h('p.muted', 'A member who lost their token, or whose token leaked, gets a new one here. The old token stops working at once.'),
      reissue),
    h('section.card', { 'aria-labelledby': 'm-ledger' }, h('h2#m-ledger', 'Balance ledger'), ledger),
    h('section.card', { 'aria-labelledby': 'm-orders' }, h('h2#m-orders', 'Orders'), orders),
  );
  pager(ledger, {
    label: 'Ledger',
    load: (cursor) => get(`/users/${userId}/balance/transactions`, { cursor, limit: 20 }),
    render: (items) => table([
      { label: 'When', cell: (e) => when(e.createdAt) },
      { label: 'Kind', cell: (e) => badge(e.kind, e.kind === 'PAYMENT' ? 'PENDING' : e.kind === 'REFUND' ? 'REFUNDED' : 'PAID') },
      { label: 'Amount', num: true, cell: (e) => (e.amount > 0 ? `+${money(e.amount)}` : `−${money(-e.amount)}`) },
      { label: 'Balance after', num: true, cell: (e) => money(e.balanceAfter) },
      { label: 'Order', cell: (e) => (e.orderId ? h('a', { href: `#/orders/${e.orderId}` }, `#${e.orderId}`) : '—') },
    ], items, { empty: 'No balance movements yet.' }),
  });
  pager(orders, {
    label: 'Member orders',
    load: (cursor) => get('/admin/orders', { userId: user.id, cursor, limit: 10 }),
    render: (items) => table([
      { label: 'Order', cell: (o) => h('a', { href: `#/orders/${o.id}` }, `#${o.id}`) },
      { label: 'Status', cell: (o) => badge(o.status) },
      { label: 'Total', num: true, cell: (o) => money(o.total) },
      { label: 'Created', cell: (o) => when(o.createdAt) },
    ], items, { empty: 'No orders.' }),
  });
}

function reissueToken(user) {
  dialog({
    title: `Issue a new token to ${user.name}?`,
    confirm: 'Issue new token',
    danger: true,
    body: h('p', 'The member’s current token stops working at once. The new token is shown once: hand it to the member over a safe channel.'),
    submit: async () => {
      const issued = await post(`/admin/users/${user.id}/tokens`);
      showToken(user, issued.token);
    },
  });
}

function showToken(user, token) {
  const dlg = h('dialog', { 'aria-labelledby': 'token-title' },
    h('h2#token-title', `New token for ${user.name}`),
    h('p', 'Shown once. Copy it now; it is not stored in readable form.'),
    h('p.token#new-token', token),
    h('div.actions', h('button', { type: 'button', onclick: () => dlg.close() }, 'Done')));
  dlg.addEventListener('close', () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  notify(`A new token was issued to member #${user.id}; the old one no longer works.`);
}
