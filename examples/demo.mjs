// A runaway agent meets a budget. No network: a local stand-in for the OpenAI API answers.
//
//   npm run demo
//
// The agent retries "until the task succeeds" — it never does — and its context grows with every
// attempt, so every call costs more than the last. Bursora reserves each call's worst case
// before it is sent and refuses the first one that would take the agent past $0.05 today: that
// call never reaches the provider.

import OpenAI from 'openai';
import { createBursora, withTags, BudgetExceededError } from '../dist/index.mjs';
import { startSim } from '../tests/support/openai-sim.mjs';

const usd = (n) => `$${n.toFixed(6)}`;

const sim = await startSim({ completionTokens: 1200 }); // a verbose model: 1,200 tokens per answer
const bursora = createBursora({
  budgets: [
    { name: 'runaway-agent daily', match: { agent: 'runaway-agent' }, limitUsd: 0.05, window: 'day' },
    { name: 'project daily', limitUsd: 5, window: 'day', mode: 'notify' },
  ],
});
const openai = bursora.wrap(new OpenAI({ apiKey: 'sk-demo', baseURL: sim.baseURL, maxRetries: 0 }));

console.log('Bursora demo: a runaway agent with a $0.05/day budget (gpt-4o-mini, local simulator)\n');

const messages = [
  { role: 'system', content: 'You are an agent. Fix the failing build. Keep trying until it passes.' },
  { role: 'user', content: 'The build fails with: error TS2322 in src/index.ts. Fix it.' },
];

let attempt = 0;
let stoppedBy = null;
await withTags({ agent: 'runaway-agent', task: 'fix-build' }, async () => {
  for (;;) {
    attempt++;
    try {
      const r = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages, max_completion_tokens: 4000 });
      const u = r.usage;
      console.log(`  attempt ${String(attempt).padStart(2)}: ${String(u.prompt_tokens).padStart(6)} tokens in, ${u.completion_tokens} out — "still failing, retry"`);
      // The agent appends the answer and the (unchanged) failure, and tries again.
      messages.push(r.choices[0].message, { role: 'user', content: 'Still failing with the same error. Try again.' });
    } catch (err) {
      if (!(err instanceof BudgetExceededError)) throw err;
      stoppedBy = err;
      break;
    }
  }
});

const sent = sim.count('/v1/chat/completions');
console.log(`\nAttempt ${attempt} was refused before it was sent:`);
console.log(`  ${stoppedBy.name} (${stoppedBy.code}): ${stoppedBy.message}`);
console.log(`  its worst case was ${usd(stoppedBy.estimatedUsd)}; budget "${stoppedBy.budget.name}" had ${usd(stoppedBy.budget.spentUsd)} spent of ${usd(stoppedBy.budget.limitUsd)}`);
console.log(`  the provider received ${sent} requests — the ${attempt - 1} that fit, not the one that did not.\n`);

await bursora.flush();
const rows = await bursora.spend();
console.log('spend():\n');
console.log('| budget | window | mode | spent | reserved | limit | resets at |');
console.log('|---|---|---|---:|---:|---:|---|');
for (const b of rows) {
  console.log(`| ${b.name}${b.key ? ` (${b.key})` : ''} | ${b.window} | ${b.mode ?? 'block'} | ${usd(b.spentUsd)} | ${usd(b.reservedUsd)} | ${usd(b.limitUsd)} | ${b.resetsAt ?? '—'} |`);
}

await bursora.shutdown();
await sim.close();
