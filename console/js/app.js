// Entry point: sign-in, navigation (hash routes, so the token never enters a URL), pages.

import { get, setToken, token, whenUnauthorized } from './api.js';
import { field, h } from './ui.js';
import * as dashboard from './pages/dashboard.js';
import * as orders from './pages/orders.js';
import * as products from './pages/products.js';
import * as coupons from './pages/coupons.js';
import * as members from './pages/members.js';

const pages = { dashboard, orders, products, coupons, members };
const main = document.getElementById('main');
const nav = document.getElementById('nav');
const signOutButton = document.getElementById('sign-out');

/** `#/orders/12?userId=3` → { page: 'orders', id: '12', params } */
function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = hash.split('?');
  const [page, id] = path.split('/');
  return { page: pages[page] ? page : 'dashboard', id, params: new URLSearchParams(query) };
}

function signedIn(yes) {
  nav.hidden = !yes;
  signOutButton.hidden = !yes;
}

function signOut(message) {
  setToken(null);
  renderSignIn(message);
}

/** Check a token against an admin-only read before keeping it. */
async function trySignIn(candidate) {
  try {
    await get('/admin/orders', { limit: 1 }, { token: candidate });
    return null;
  } catch (err) {
    if (err.status === 401) return 'That token was not accepted. Use the admin token printed when shopd first started, or the one given with --admin-token / SHOPD_ADMIN_TOKEN.';
    if (err.status === 403) return 'That is a member token. The console needs an admin token.';
    return err.message;
  }
}

function renderSignIn(message) {
  signedIn(false);
  document.title = 'Sign in · shopd console';
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true, spellcheck: 'false' });
  const error = h('p.error-text#signin-error', { role: 'alert' }, message || '');
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form.card.signin', { 'aria-labelledby': 'signin-title' },
    h('h1#signin-title', 'Sign in'),
    h('p.muted', 'Operate the shop with an admin token. It is kept in this browser tab only and forgotten when the tab closes.'),
    field('Admin token', input),
    error,
    h('div.actions', button));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const candidate = input.value.trim();
    if (!candidate) {
      error.textContent = 'Enter the admin token.';
      return;
    }
    button.disabled = true;
    error.textContent = '';
    const problem = await trySignIn(candidate);
    button.disabled = false;
    if (problem) {
      error.textContent = problem;
      input.focus();
      return;
    }
    setToken(candidate);
    if (!location.hash || location.hash === '#/') location.hash = '#/dashboard';
    render();
  });
  main.replaceChildren(form);
  input.focus();
}

let renderSeq = 0;
async function render() {
  if (!token()) {
    renderSignIn();
    return;
  }
  signedIn(true);
  const { page, id, params } = route();
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const seq = ++renderSeq;
  const view = h('div', { 'data-page': page });
  main.replaceChildren(view);
  try {
    await pages[page].render(view, { id, params });
  } catch (err) {
    if (seq === renderSeq) view.append(h('p.error-text', { role: 'alert' }, err.message));
  }
  if (seq === renderSeq) document.title = `${view.querySelector('h1')?.textContent || 'shopd'} · shopd console`;
}

whenUnauthorized(() => signOut('Your session ended: the server no longer accepts this token. Sign in again.'));
signOutButton.addEventListener('click', () => signOut('Signed out.'));
window.addEventListener('hashchange', () => {
  render();
  main.focus({ preventScroll: true });
});
render();
