// The dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven by playwright-core),
// against the real bursora-server binary on a fresh SQLite data directory: sign in, see the demo
// spend, create a budget, watch a blocked call appear without reloading, export CSV, manage keys,
// and reach every control with the keyboard, each with an accessible name. Screenshots of every
// page go to test-artifacts/dashboard/.
//
// Needs `cargo build -p bursora-server` (npm test's cargo run builds it) and `apt-get install
// chromium`; skips, saying so, only when /usr/bin/chromium is absent.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { CHROMIUM, ROOT, launchChromium, startServer } from './support/bursora-server.mjs';

const ARTIFACTS = path.join(ROOT, 'test-artifacts', 'dashboard');
const skip = fs.existsSync(CHROMIUM) ? false : `skipped: ${CHROMIUM} is absent (apt-get install -y chromium)`;
if (skip) console.log(`# dashboard browser tests ${skip}`);

const MODELS = ['gpt-4o-mini', 'gpt-4o', 'o3-mini'];
const TENANTS = ['acme', 'globex', 'initech', 'umbrella'];

/** Demo spend through the API: reserve and settle calls; returns what was settled, per tenant. */
async function seed(srv, key) {
  const settled = { total: 0n, byTenant: {} };
  let n = 0;
  for (const tenant of TENANTS) {
    for (const model of MODELS) {
      for (let k = 0; k < 2; k += 1) {
        n += 1;
        const actual = 1_000_000 * n * (TENANTS.indexOf(tenant) + 1) + 7; // odd nanos: exactness shows
        const r = await srv.api('POST', '/v1/reserve', key, {
          tags: { tenant_id: tenant, agent_id: `agent-${k}` },
          provider: 'openai',
          model,
          amount_nanos: actual + 5_000_000,
        });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        const s = await srv.api('POST', '/v1/settle', key, { items: [{ id: r.body.id, actual_nanos: actual }] });
        assert.equal(s.status, 200, JSON.stringify(s.body));
        settled.total += BigInt(actual);
        settled.byTenant[tenant] = (settled.byTenant[tenant] ?? 0n) + BigInt(actual);
      }
    }
  }
  // One call in flight (reserved, not settled) so budgets show reserved next to spent.
  const live = await srv.api('POST', '/v1/reserve', key, {
    tags: { tenant_id: 'acme', agent_id: 'agent-long' },
    provider: 'openai',
    model: 'gpt-4o',
    amount_nanos: 40_000_000,
    ttl_ms: 600_000,
  });
  assert.equal(live.status, 200, JSON.stringify(live.body));
  return settled;
}

function usdText(nanos) {
  return new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' }).format(Number(nanos) / 1e9);
}

async function ready(page) {
  await page.waitForSelector('main[data-ready="true"]', { timeout: 15_000 });
}

async function shot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

describe('dashboard in headless Chromium', { skip, timeout: 240_000 }, () => {
  let srv;
  let browser;
  let page;
  let project;
  let projectKey;
  let settled;
  const problems = [];

  before(async () => {
    srv = await startServer();
    const p = await srv.api('POST', '/v1/projects', srv.admin, { name: 'demo' });
    assert.equal(p.status, 201);
    project = p.body.id;
    const k = await srv.api('POST', `/v1/projects/${project}/keys`, srv.admin, { name: 'seed' });
    projectKey = k.body.key;
    const b = await srv.api('POST', `/v1/budgets?project=${project}`, srv.admin, {
      name: 'per-tenant',
      match: { tenant_id: '*' },
      limit_usd: 5,
      window: 'day',
    });
    assert.equal(b.status, 201, JSON.stringify(b.body));
    settled = await seed(srv, projectKey);
    browser = await launchChromium();
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    // Any script error or CSP violation is a failure of the page, reported by the last test.
    page.on('console', (m) => {
      if (m.type() === 'error' && !/status of 40[1349]/.test(m.text())) problems.push(m.text());
    });
    page.on('pageerror', (e) => problems.push(String(e)));
  });

  after(async () => {
    await browser?.close();
    await srv?.stop();
  });

  test('the server serves the dashboard with a strict CSP and revalidation', async () => {
    const root = await fetch(`${srv.base}/`, { redirect: 'manual' });
    assert.equal(root.status, 303);
    assert.equal(root.headers.get('location'), '/dashboard/');
    const index = await fetch(`${srv.base}/dashboard/`);
    assert.equal(index.status, 200);
    assert.match(index.headers.get('content-type'), /^text\/html/);
    const csp = index.headers.get('content-security-policy');
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.equal(index.headers.get('cache-control'), 'no-cache');
    const etag = index.headers.get('etag');
    const again = await fetch(`${srv.base}/dashboard/`, { headers: { 'if-none-match': etag } });
    assert.equal(again.status, 304);
    const js = await fetch(`${srv.base}/dashboard/js/main.js`);
    assert.match(js.headers.get('content-type'), /^text\/javascript/);
    const css = await fetch(`${srv.base}/dashboard/app.css`);
    assert.match(css.headers.get('content-type'), /^text\/css/);
    const missing = await fetch(`${srv.base}/dashboard/nope.js`);
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).error.code, 'not_found');
    // No inline script anywhere in the page.
    assert.doesNotMatch(await index.text(), /<script(?![^>]*\bsrc=)[^>]*>/);
  });

  test('sign in with the admin key and see the demo spend', async () => {
    await page.goto(`${srv.base}/`);
    assert.equal(new URL(page.url()).pathname, '/dashboard/');
    await page.getByLabel('API key').waitFor();
    await shot(page, 'signin');
    await page.getByLabel('API key').fill('bsa_not_a_key_of_this_server_000000000000');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('This server does not know that key').waitFor();
    await page.getByLabel('API key').fill(srv.admin);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await ready(page);
    await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
    assert.equal(await page.locator('#project-picker').inputValue(), project);
    // The month's figure is the settled truth, to the cent.
    const mtd = page.locator('.kpi').filter({ has: page.locator('.kpi-label', { hasText: /^Month to date$/ }) }).locator('.kpi-value');
    assert.equal((await mtd.textContent()).trim(), usdText(settled.total));
    // Top tenant by spend: umbrella (the largest multiplier).
    await page.locator('section.card', { hasText: 'Top tenant_id' }).getByText('umbrella').first().waitFor();
    await page.locator('section.card', { hasText: 'Top models' }).getByText('gpt-4o-mini').waitFor();
    // The key is in session storage only: not in the URL, not in the page.
    assert.ok(!page.url().includes(srv.admin));
    assert.equal(await page.evaluate(() => sessionStorage.getItem('bursora.key')), srv.admin);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.ok(!(await page.content()).includes(srv.admin));
    await shot(page, 'overview');
  });

  test('budgets show spent and reserved; create, edit and delete a budget', async () => {
    await page.getByRole('link', { name: 'Budgets' }).click();
    await ready(page);
    const perTenant = page.locator('article.budget', { hasText: 'per-tenant' });
    await perTenant.getByText('4 counters this window').waitFor();
    await perTenant.getByText(/resets in/).first().waitFor();
    await perTenant.getByText(/\$0\.04 reserved/).waitFor(); // the call in flight, for acme

    await page.getByRole('button', { name: 'New budget' }).click();
    const dialog = page.getByRole('dialog', { name: 'New budget' });
    await dialog.getByLabel('Name').fill('acme-cap');
    await dialog.getByLabel('Limit (USD)').fill('0.05');
    await dialog.getByLabel('Window').selectOption('day');
    await dialog.getByLabel('Match').fill('tenant_id=acme');
    await dialog.getByRole('button', { name: 'Create budget' }).click();
    const card = page.locator('article.budget', { hasText: 'acme-cap' });
    await card.waitFor();
    const created = (await srv.api('GET', `/v1/budgets?project=${project}`, srv.admin)).body.budgets.find(
      (b) => b.name === 'acme-cap',
    );
    assert.deepEqual(
      { limit_nanos: created.limit_nanos, window: created.window, mode: created.mode, match: created.match },
      { limit_nanos: 50_000_000, window: 'day', mode: 'block', match: { tenant_id: 'acme' } },
    );
    await shot(page, 'budgets');
    await perTenant.getByRole('button', { name: 'Past windows of per-tenant' }).click();
    const history = page.getByRole('dialog', { name: 'per-tenant: past windows' });
    await history.locator('table').waitFor();
    await shot(page, 'budget-history');
    await history.getByRole('button', { name: 'Close' }).click();

    // Edit: raise to $0.06, then back to a tiny cap for the next test.
    await card.getByRole('button', { name: 'Edit acme-cap' }).click();
    const edit = page.getByRole('dialog', { name: 'Edit budget acme-cap' });
    await edit.getByLabel('Limit (USD)').fill('0.000001');
    await edit.getByRole('button', { name: 'Save changes' }).click();
    await card.getByText(/\$0\.000001 per day/).waitFor();

    // Delete a throwaway budget through the confirmation dialog.
    await page.getByRole('button', { name: 'New budget' }).click();
    const d2 = page.getByRole('dialog', { name: 'New budget' });
    await d2.getByLabel('Name').fill('throwaway');
    await d2.getByLabel('Limit (USD)').fill('1');
    await d2.getByRole('button', { name: 'Create budget' }).click();
    await page.locator('article.budget', { hasText: 'throwaway' }).waitFor();
    await page.getByRole('button', { name: 'Delete throwaway' }).click();
    await page.getByRole('dialog', { name: 'Delete throwaway?' }).getByRole('button', { name: 'Delete budget' }).click();
    await page.locator('article.budget', { hasText: 'throwaway' }).waitFor({ state: 'detached' });
    const names = (await srv.api('GET', `/v1/budgets?project=${project}`, srv.admin)).body.budgets.map((b) => b.name);
    assert.deepEqual(names.sort(), ['acme-cap', 'per-tenant']);
  });

  test('a blocked call appears live, without a reload', async () => {
    await page.getByRole('link', { name: 'Blocked & overruns' }).click();
    await ready(page);
    await page.getByRole('heading', { name: 'No blocked calls' }).waitFor();
    await page.evaluate(() => {
      window.__sameDocument = true;
    });
    const r = await srv.api('POST', '/v1/reserve', projectKey, {
      tags: { tenant_id: 'acme', agent_id: 'runaway' },
      provider: 'openai',
      model: 'gpt-4o',
      amount_nanos: 2_000_000,
    });
    assert.equal(r.status, 409, JSON.stringify(r.body));
    const row = page.locator('tr[data-kind="refused"]', { hasText: 'acme-cap' });
    await row.waitFor({ timeout: 8_000 });
    assert.match(await row.textContent(), /runaway/);
    assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
    await shot(page, 'blocked');
    for (const view of ['Overruns', 'Expired reservations', 'All calls']) {
      await page.getByRole('link', { name: view, exact: true }).click();
      await ready(page);
    }
    await page.locator('tr[data-kind="settled"]').first().waitFor();
    await shot(page, 'all-calls');
  });

  test('the spend explorer groups by a tag and exports exactly that as CSV', async () => {
    await page.getByRole('link', { name: 'Spend explorer' }).click();
    await ready(page);
    await page.getByLabel('Group by').selectOption('tag:tenant_id');
    await page.locator('#spend-table').getByText('initech').waitFor();
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Export CSV' }).click(),
    ]);
    assert.match(download.suggestedFilename(), /^bursora-spend-tag-tenant_id-.*\.csv$/);
    const file = path.join(ARTIFACTS, 'spend-by-tenant.csv');
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await download.saveAs(file);
    const lines = fs.readFileSync(file, 'utf8').trimEnd().split('\r\n');
    assert.equal(lines[0], 'group_by,value,spent_usd,spent_nanos,calls,share,from,to');
    const rows = Object.fromEntries(
      lines.slice(1).map((l) => {
        const [g, value, usd, nanos, calls] = l.split(',');
        assert.equal(g, 'tag:tenant_id');
        return [value, { usd, nanos: BigInt(nanos), calls: Number(calls) }];
      }),
    );
    for (const tenant of TENANTS) {
      assert.equal(rows[tenant].nanos, settled.byTenant[tenant], tenant);
      assert.equal(rows[tenant].calls, MODELS.length * 2, tenant);
      const exact = settled.byTenant[tenant];
      assert.equal(rows[tenant].usd, `${exact / 1_000_000_000n}.${String(exact % 1_000_000_000n).padStart(9, '0')}`);
    }
    await shot(page, 'spend');
  });

  test('API keys: create (shown once), list, revoke', async () => {
    await page.getByRole('link', { name: 'API keys' }).click();
    await ready(page);
    await page.getByLabel('Key name').fill('checkout');
    await page.getByRole('button', { name: 'Create key' }).click();
    const secret = (await page.locator('.secret pre code').first().textContent()).trim();
    assert.match(secret, /^bsk_[0-9a-f]{64}$/);
    assert.equal((await srv.api('GET', '/v1/budgets', secret)).status, 200);
    const row = page.locator('#keys-table tr', { hasText: 'checkout' });
    await row.waitFor();
    await shot(page, 'keys');
    await row.getByRole('button', { name: /Revoke key checkout/ }).click();
    await page.getByRole('dialog', { name: 'Revoke checkout?' }).getByRole('button', { name: 'Revoke key' }).click();
    await row.waitFor({ state: 'detached' });
    assert.equal((await srv.api('GET', '/v1/budgets', secret)).status, 401);
  });

  test('alerts: thresholds set on the page; the one reached is sent once and appears live', async (t) => {
    const hits = [];
    const receiver = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        hits.push(JSON.parse(body));
        res.end('ok');
      });
    });
    await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
    t.after(() => receiver.close());
    const hook = `http://127.0.0.1:${receiver.address().port}/hook/SECRET`;
    const w = await srv.api('POST', `/v1/webhooks?project=${project}`, srv.admin, { url: hook, format: 'json' });
    assert.equal(w.status, 201, JSON.stringify(w.body));
    const b = await srv.api('POST', `/v1/budgets?project=${project}`, srv.admin, { name: 'alerting', match: { tenant_id: 'alerted' }, limit_usd: 1, window: 'day' });
    assert.equal(b.status, 201, JSON.stringify(b.body));
    await page.goto(`${srv.base}/dashboard/#/alerts`);
    await ready(page);
    await page.getByText('No alerts sent yet').waitFor();
    await page.locator('#webhooks-table').getByText('json').waitFor();
    assert.ok(!(await page.content()).includes('SECRET'), 'a webhook URL\'s path is a secret');
    await page.getByLabel(/^alerting \(day\): thresholds/).fill('50, 90');
    await page.getByRole('button', { name: 'Save thresholds of alerting' }).click();
    await page.getByText('Thresholds of alerting saved').waitFor();
    const stored = await srv.api('GET', `/v1/budgets/${b.body.id}/alerts?project=${project}`, srv.admin);
    assert.deepEqual(stored.body.thresholds, [50, 90]);
    // 60% of the limit settles: the 50% threshold is reached, the 90% one is not.
    const r = await srv.api('POST', '/v1/reserve', projectKey, { tags: { tenant_id: 'alerted' }, provider: 'openai', model: 'gpt-4o', amount_nanos: 700_000_000 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    await srv.api('POST', '/v1/settle', projectKey, { items: [{ id: r.body.id, actual_nanos: 600_000_000 }] });
    const row = page.locator('#alerts-table tr[data-status="delivered"]', { hasText: 'alerting' });
    await row.waitFor({ timeout: 30_000 });
    assert.match(await row.textContent(), /50%/);
    assert.equal(hits.length, 1);
    assert.equal(hits[0].threshold_pct, 50);
    assert.equal(hits[0].budget.name, 'alerting');
    await shot(page, 'alerts');
  });

  test('every control is reachable with Tab and has an accessible name', async () => {
    const cdp = await browser.context.newCDPSession(page);
    await cdp.send('DOM.enable');
    await cdp.send('Accessibility.enable');
    const nameOfFocused = async () => {
      const tagged = await page.evaluate(() => {
        for (const e of document.querySelectorAll('[data-a11y-focus]')) e.removeAttribute('data-a11y-focus');
        const el = document.activeElement;
        if (!el || el === document.body) return null;
        el.setAttribute('data-a11y-focus', '');
        return el.dataset.ctl ?? '?';
      });
      if (tagged === null) return null;
      const { root } = await cdp.send('DOM.getDocument', { depth: 0 });
      const { nodeId } = await cdp.send('DOM.querySelector', { nodeId: root.nodeId, selector: '[data-a11y-focus]' });
      const { nodes } = await cdp.send('Accessibility.getPartialAXTree', { nodeId, fetchRelatives: false });
      return { ctl: tagged, role: nodes[0]?.role?.value, name: (nodes[0]?.name?.value ?? '').trim() };
    };
    for (const hash of ['#/overview', '#/spend', '#/budgets', '#/activity?view=all', '#/alerts', '#/keys']) {
      await page.goto(`${srv.base}/dashboard/${hash}`);
      await ready(page);
      // Number every visible control; Tab must reach each of them.
      const controls = await page.evaluate(() => {
        const sel = 'a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), select:not([disabled]), textarea, [tabindex]:not([tabindex="-1"])';
        const all = [...document.querySelectorAll(sel)].filter((e) => e.getClientRects().length && !e.closest('[hidden]'));
        all.forEach((e, i) => (e.dataset.ctl = String(i)));
        return all.map((e) => `${e.tagName.toLowerCase()} ${e.textContent.trim().slice(0, 30)}`);
      });
      await page.evaluate(() => document.activeElement?.blur());
      const reached = new Set();
      for (let i = 0; i < controls.length + 5; i += 1) {
        await page.keyboard.press('Tab');
        const f = await nameOfFocused();
        if (!f) continue;
        assert.ok(f.name.length > 0, `${hash}: control ${f.ctl} (${controls[f.ctl]}, role ${f.role}) has no accessible name`);
        reached.add(f.ctl);
      }
      const missed = controls.filter((_, i) => !reached.has(String(i)));
      assert.deepEqual(missed, [], `${hash}: not reachable with Tab`);
    }
    // The budget form, inside its dialog.
    await page.goto(`${srv.base}/dashboard/#/budgets`);
    await ready(page);
    await page.getByRole('button', { name: 'New budget' }).click();
    const seen = [];
    for (let i = 0; i < 8; i += 1) {
      const f = await nameOfFocused();
      if (f) {
        assert.ok(f.name.length > 0, `budget form: a ${f.role} has no accessible name`);
        seen.push(f.name);
      }
      await page.keyboard.press('Tab');
    }
    for (const label of ['Name', 'Limit (USD)', 'Window', 'Match', 'Create budget']) {
      assert.ok(seen.some((n) => n.startsWith(label)), `budget form: Tab never reached ${label} (${seen})`);
    }
    await page.keyboard.press('Escape');
    await cdp.detach();
  });

  test('a project key sees its project read-only; an empty project says what to do next', async () => {
    const p = await srv.api('POST', '/v1/projects', srv.admin, { name: 'fresh' });
    const k = await srv.api('POST', `/v1/projects/${p.body.id}/keys`, srv.admin, { name: 'app' });
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('API key').fill(k.body.key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await ready(page);
    await page.getByRole('link', { name: 'Overview' }).click();
    await ready(page);
    await page.getByText('Get your first spend here').waitFor();
    const snippet = await page.locator('pre.code').first().textContent();
    assert.match(snippet, /createBursora\(\{/);
    assert.ok(snippet.includes(`endpoint: "${srv.base}"`), snippet);
    assert.ok(!snippet.includes(k.body.key), 'the snippet never shows a key');
    await shot(page, 'empty-overview');
    await page.getByRole('link', { name: 'Budgets' }).click();
    await ready(page);
    await page.getByText('No budgets yet').waitFor();
    assert.equal(await page.getByRole('button', { name: 'New budget' }).count(), 0);
    await shot(page, 'empty-budgets');
  });

  test('no script errors or CSP violations on any page', () => {
    assert.deepEqual(problems, []);
  });
});
