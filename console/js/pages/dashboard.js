// Dashboard: paid orders and revenue per hour, the outbox backlog with replay, best-sellers.

import { get, post } from '../api.js';
import { barChart, hourLabel } from '../chart.js';
import { badge, busy, describe, field, h, money, notify, num, pager, table, when } from '../ui.js';

const RANGES = { '24': 'Last 24 hours', '72': 'Last 3 days', '168': 'Last 7 days' };

export async function render(view) {
  const rangeSelect = h('select', { name: 'range' }, Object.entries(RANGES).map(([v, t]) => h('option', { value: v }, t)));
  const tiles = h('div.tiles');
  const charts = h('div');
  const outboxBox = h('section.card', { 'aria-labelledby': 'outbox-title' });
  const popularBox = h('section.card', { 'aria-labelledby': 'popular-title' });
  view.append(
    h('h1', 'Dashboard'),
    h('form.inline', { onsubmit: (e) => e.preventDefault() }, field('Period', rangeSelect)),
    tiles,
    charts,
    h('div.grid', outboxBox, popularBox),
  );

  const state = { sales: null, outbox: null };

  function renderTiles() {
    const s = state.sales;
    const o = state.outbox;
    tiles.replaceChildren(
      tile('Paid orders', s ? num(s.orders) : '…', 'tile-orders'),
      tile('Revenue', s ? money(s.revenue) : '…', 'tile-revenue'),
      tile('Outbox pending', o ? num(o.pending) : '…', 'tile-pending'),
      tile('Outbox dead', o ? num(o.dead) : '…', 'tile-dead', o && o.dead > 0),
    );
  }

  async function loadSales() {
    const hours = Number(rangeSelect.value);
    const to = new Date();
    const from = new Date(to.getTime() - hours * 3600 * 1000);
    try {
      state.sales = await get('/admin/stats/sales', { from: from.toISOString(), to: to.toISOString() });
    } catch (err) {
      state.sales = null;
      charts.replaceChildren(h('p.error-text', { role: 'alert' }, describe(err)));
      renderTiles();
      return;
    }
    renderTiles();
    const points = state.sales.hours.map((x) => ({ label: new Date(x.hour), value: x.orders, revenue: x.revenue }));
    const range = RANGES[rangeSelect.value].toLowerCase();
    charts.replaceChildren(h('div.grid',
      h('section.card.chart', { 'aria-labelledby': 'chart-orders-title' },
        h('h2#chart-orders-title', 'Paid orders per hour'),
        barChart({ title: 'Paid orders per hour', description: `${state.sales.orders} orders paid, ${range}.`, points, format: (v) => num(Math.round(v)) })),
      h('section.card.chart', { 'aria-labelledby': 'chart-revenue-title' },
        h('h2#chart-revenue-title', 'Revenue per hour'),
        barChart({ title: 'Revenue per hour', description: `${money(state.sales.revenue)} paid, ${range}.`, cls: 'revenue', points: points.map((p) => ({ label: p.label, value: p.revenue })), format: (v) => compactMoney(v) }))),
    h('details.card',
      h('summary', 'Hourly figures as a table'),
      table([
        { label: 'Hour', cell: (p) => `${p.label.toLocaleDateString('en-GB')} ${hourLabel(p.label)}` },
        { label: 'Paid orders', num: true, cell: (p) => num(p.value) },
        { label: 'Revenue', num: true, cell: (p) => money(p.revenue) },
      ], points.filter((p) => p.value > 0), { empty: 'No paid orders in this period.' })));
  }

  async function loadOutboxCounts() {
    try {
      state.outbox = await get('/admin/stats/outbox');
    } catch (err) {
      state.outbox = null;
      notify(describe(err), 'error');
    }
    renderTiles();
  }

  function renderOutbox() {
    const list = h('div');
    const replayAll = h('button.secondary.small', { type: 'button' }, 'Replay every dead event on this page');
    outboxBox.replaceChildren(
      h('h2#outbox-title', 'Undelivered events (DEAD)'),
      h('p.muted', 'Events the data platform did not accept after every attempt. Replay them once the platform is back: each goes back in line with a fresh attempt budget.'),
      list,
    );
    let shown = [];
    const paged = pager(list, {
      label: 'Dead events',
      load: (cursor) => get('/admin/outbox', { status: 'DEAD', cursor, limit: 10 }),
      render: (items) => {
        shown = items;
        replayAll.hidden = items.length === 0;
        return h('div',
          table([
            { label: 'Event', cell: (e) => h('span', { title: e.eventId }, `${e.type} · order `, h('a', { href: `#/orders/${e.orderId}` }, `#${e.orderId}`)) },
            { label: 'Attempts', num: true, cell: (e) => num(e.attempts) },
            { label: 'Last error', cell: (e) => e.lastError || '—' },
            { label: 'Since', cell: (e) => h('span.nowrap', when(e.createdAt)) },
            { label: 'Action', cell: (e) => h('button.small', { type: 'button', 'aria-label': `Replay event for order ${e.orderId}`, onclick: (ev) => replay(ev.currentTarget, [e]) }, 'Replay') },
          ], items, { empty: 'No dead events. Every event was delivered or is still being tried.' }),
          h('div.actions', replayAll));
      },
    });
    replayAll.addEventListener('click', () => replay(replayAll, shown));
    async function replay(button, events) {
      await busy(button, async () => {
        for (const e of events) await post(`/admin/outbox/${e.eventId}/retry`);
        notify(events.length === 1 ? `Event for order #${events[0].orderId} replayed: it is PENDING again.` : `${events.length} events replayed: they are PENDING again.`);
        await Promise.all([paged.first(), loadOutboxCounts()]);
      });
    }
  }

  async function loadPopular() {
    const days = h('select', { name: 'days' }, [1, 3, 7, 30].map((d) => h('option', { value: d, selected: d === 7 }, `${d} day${d > 1 ? 's' : ''}`)));
    const refresh = h('button.secondary.small', { type: 'button' }, 'Recompute now');
    const list = h('div');
    popularBox.replaceChildren(h('h2#popular-title', 'Best-sellers'), h('form.inline', { onsubmit: (e) => e.preventDefault() }, field('Over the last', days), refresh), list);
    async function show() {
      try {
        const p = await get('/products/popular', { days: days.value, limit: 10 });
        list.replaceChildren(
          table([
            { label: '#', num: true, cell: (r) => r.rank },
            { label: 'Product', cell: (r) => r.name },
            { label: 'Sold', num: true, cell: (r) => num(r.soldQuantity) },
            { label: 'Revenue', num: true, cell: (r) => money(r.revenue) },
          ], p.items, { empty: 'Nothing sold in this period yet.' }),
          h('p.muted', `As of ${when(p.asOf)}.`));
      } catch (err) {
        list.replaceChildren(h('p.error-text', { role: 'alert' }, describe(err)));
      }
    }
    days.addEventListener('change', show);
    refresh.addEventListener('click', () => busy(refresh, async () => {
      await post('/admin/ranking/refresh');
      await show();
      notify('Best-sellers recomputed.');
    }));
    await show();
  }

  rangeSelect.addEventListener('change', loadSales);
  renderTiles();
  renderOutbox();
  await Promise.all([loadSales(), loadOutboxCounts(), loadPopular()]);
}

function tile(label, value, id, alert) {
  return h('div.tile', { id, class: alert ? 'tile alert' : 'tile' }, h('div.label', label), h('div.value', value));
}

function compactMoney(v) {
  if (v >= 1e9) return `₩${+(v / 1e9).toFixed(2)}B`;
  if (v >= 1e6) return `₩${+(v / 1e6).toFixed(2)}M`;
  if (v >= 1e3) return `₩${+(v / 1e3).toFixed(2)}k`;
  return `₩${Math.round(v)}`;
}
