// Server mode under concurrency, counting every admitted call and every nano-USD:
// - 1,000 concurrent calls from 4 Node processes on a budget admitting exactly K: on the SQLite
//   default with one server, and on Postgres with two replicas (two processes on each);
// - kill -9 of a replica in the middle of a sustained load (clients know both replicas): no
//   settled call is lost or counted twice, the other replica carries on;
// - kill -9 of a client with calls in flight: its reservations expire and are settled at their
//   reserved amount.
// The simulator holds responses where counts must not depend on refunds arriving in time.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { startSim, sumCostNanos } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { chatRequest, probeBound, waitUntil } from './support/sdk.mjs';
import { startServer, adminApi, DATABASE_URL } from './support/server.mjs';

const WORKER = new URL('./support/server-worker.mjs', import.meta.url);
const CALLS = 1000;
const PROCESSES = 4;
const client = CLIENTS[0];

/** Forks a server-mode SDK process; `onRefused` is called for each refusal as it happens. */
function startWorker(message, onRefused = () => {}, onUnavailable = () => {}) {
  const child = fork(WORKER, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const ready = new Promise((resolve) => child.on('message', (m) => m.type === 'ready' && resolve()));
  const done = new Promise((resolve, reject) => {
    child.on('message', (m) => {
      if (m.type === 'refused') onRefused();
      if (m.type === 'unavailable') onUnavailable();
      if (m.type === 'done') resolve(m);
    });
    child.once('exit', (code, signal) => reject(new Error(`worker exited (${code ?? signal}) before reporting`)));
  });
  done.catch(() => undefined);
  child.send({ clientName: client.name, ...message });
  return { child, ready, done };
}

async function spendRow(admin, project, name) {
  const row = (await admin.spend(project)).find((r) => r.name === name);
  assert.ok(row, `budget ${name}`);
  return row;
}

const STORES = [{ store: 'sqlite', replicas: 1 }, { store: 'postgres', replicas: 2 }];

for (const { store, replicas } of STORES) {
  describe(`server mode on ${store} (${replicas} replica${replicas > 1 ? 's' : ''})`, { timeout: 180_000, skip: store === 'postgres' && !DATABASE_URL ? 'BURSORA_TEST_DATABASE_URL is not set: run under scripts/pg-test.sh (npm test does)' : false }, () => {
    let sim;
    let servers = [];
    let admin;
    let bound;
    before(async () => {
      sim = await startSim({ completionTokens: 5 });
      for (let i = 0; i < replicas; i++) servers.push(await startServer({ store }));
      admin = adminApi(servers[0].url);
      ({ nanos: bound } = await probeBound(sim, () => clientFor(client.OpenAI, sim), (c) => c.chat.completions.create(chatRequest())));
    });
    after(async () => {
      for (const s of servers) await s.stop();
      await sim?.close();
    });

    test(`${CALLS} concurrent calls from ${PROCESSES} processes: exactly K admitted, spend is their true cost`, async () => {
      sim.reset();
      const { project, key } = await admin.project();
      const K = 23;
      await admin.budget(project, { name: 'cap-k', limit_nanos: K * bound + Math.floor(bound / 2), window: 'day' });
      sim.hold();
      let refused = 0;
      let unavailable = 0;
      const workers = Array.from({ length: PROCESSES }, (_, i) =>
        startWorker(
          // A burst of 1,000 reservations on one hot budget queues on its counter row: give the
          // decision time, this test is about exactness (latency is the benchmark's business).
          { baseURL: sim.baseURL, endpoint: servers[i % servers.length].url, apiKey: key, calls: CALLS / PROCESSES, decisionTimeoutMs: 30_000 },
          () => refused++,
          () => unavailable++,
        ),
      );
      await waitUntil(() => refused + unavailable + sim.count() >= CALLS, 90_000, 'every call to be refused or received');
      assert.equal(unavailable, 0, 'no decision timed out');
      assert.equal(sim.count('/v1/chat/completions'), K, `admitted ${sim.count()} of ${CALLS}`);
      assert.equal(refused, CALLS - K);
      const held = await spendRow(admin, project, 'cap-k');
      assert.equal(held.reserved_nanos, K * bound, 'the K in flight hold their bounds');
      assert.ok(held.reserved_nanos <= held.limit_nanos);
      sim.release();
      const results = await Promise.all(workers.map((w) => w.done));
      assert.deepEqual(results.flatMap((r) => r.errors), []);
      assert.equal(results.reduce((n, r) => n + r.ok, 0), K);
      assert.equal(results.reduce((n, r) => n + r.unavailable, 0), 0);
      const row = await spendRow(admin, project, 'cap-k');
      assert.equal(row.reserved_nanos, 0);
      assert.equal(row.spent_nanos, sumCostNanos(sim.usages), 'server spend equals the sum of true costs');
    });

    test('kill -9 of a client with calls in flight: its reservations expire at their reserved amount', async () => {
      sim.reset();
      const { project, key } = await admin.project();
      await admin.budget(project, { name: 'daily', limit_usd: 100, window: 'day' });
      sim.hold();
      const IN_FLIGHT = 5;
      const w = startWorker({ baseURL: sim.baseURL, endpoint: servers.at(-1).url, apiKey: key, calls: IN_FLIGHT, reservationTtlMs: 1000 });
      await waitUntil(() => sim.count() >= IN_FLIGHT, 30_000, 'the calls to reach the provider');
      w.child.kill('SIGKILL');
      await w.done.catch(() => undefined);
      sim.release();
      assert.equal((await spendRow(admin, project, 'daily')).reserved_nanos, IN_FLIGHT * bound);
      let row;
      const deadline = Date.now() + 20_000;
      do {
        await new Promise((r) => setTimeout(r, 200));
        row = await spendRow(admin, project, 'daily');
      } while (row.reserved_nanos > 0 && Date.now() < deadline);
      assert.equal(row.reserved_nanos, 0, 'nothing stays reserved');
      assert.equal(row.spent_nanos, IN_FLIGHT * bound, 'settled at their reserved amount');
    });

    if (replicas > 1) {
      test('kill -9 of a replica under load: the other carries on; nothing lost or counted twice', async () => {
        sim.reset();
        sim.set({ latencyMs: 5 });
        try {
          const { project, key } = await admin.project();
          await admin.budget(project, { name: 'daily', limit_usd: 1000, window: 'day' });
          const [a, b] = servers;
          const PER = 150;
          const workers = Array.from({ length: PROCESSES }, (_, i) =>
            startWorker({
              baseURL: sim.baseURL,
              // Each client knows both replicas; half start on the one that dies.
              endpoint: i % 2 === 0 ? `${a.url},${b.url}` : `${b.url},${a.url}`,
              apiKey: key,
              calls: PER,
              concurrency: 8,
            }),
          );
          await waitUntil(() => sim.count() >= (PROCESSES * PER) / 3, 60_000, 'a third of the load');
          await a.kill9();
          const results = await Promise.all(workers.map((w) => w.done));
          assert.deepEqual(results.flatMap((r) => r.errors), []);
          const ok = results.reduce((n, r) => n + r.ok, 0);
          const unavailable = results.reduce((n, r) => n + r.unavailable, 0);
          assert.equal(ok + unavailable, PROCESSES * PER);
          assert.equal(sim.count(), ok, 'every admitted call reached the provider, no other did');
          assert.ok(ok > (PROCESSES * PER) / 2, `the surviving replica carried the load (${ok} admitted, ${unavailable} unavailable)`);
          const admitB = adminApi(b.url);
          let row;
          const deadline = Date.now() + 20_000;
          do {
            row = await spendRow(admitB, project, 'daily');
            if (row.reserved_nanos === 0) break;
            await new Promise((r) => setTimeout(r, 200));
          } while (Date.now() < deadline);
          assert.equal(row.reserved_nanos, 0);
          assert.equal(row.spent_nanos, sumCostNanos(sim.usages), 'each settled call counted once');
        } finally {
          sim.set({ latencyMs: 0 });
          // Bring the dead replica back for any later test.
          servers[0] = await startServer({ store });
          admin = adminApi(servers[0].url);
        }
      });
    }
  });
}
