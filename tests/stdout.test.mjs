// The SDK never writes to its host's stdout; a warning goes to stderr once; the host process
// exits on its own when its work is done.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startSim } from './support/openai-sim.mjs';

function run(args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [new URL('./support/stdout-child.mjs', import.meta.url).pathname, ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child did not exit within 15 s (background work keeps the process alive?)\nstderr: ${stderr}`));
    }, 15_000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

describe('stdout stays clean', { timeout: 40_000 }, () => {
  let sim;
  before(async () => {
    sim = await startSim({ completionTokens: 3 });
  });
  after(() => sim.close());

  for (const mode of ['guard', 'default']) {
    test(`${mode === 'guard' ? 'createBursora()' : 'wrap(client) with no options'}: empty stdout, one warning on stderr, exits by itself`, async () => {
      sim.reset();
      // Embedded, in memory: no server, no file from the developer's environment.
      const env = { ...process.env };
      for (const k of Object.keys(env)) if (k.startsWith('BURSORA_')) delete env[k];
      const { code, signal, stdout, stderr } = await run([sim.baseURL, mode], env);
      assert.equal(signal, null);
      assert.equal(code, 0, `exit ${code}; stderr:\n${stderr}`);
      assert.equal(stdout, '');
      const mentions = stderr.split('\n').filter((l) => l.includes('acme-llm-unknown-9'));
      assert.equal(mentions.length, 1, `stderr:\n${stderr}`);
      assert.equal(sim.count('/v1/chat/completions'), mode === 'guard' ? 4 : 3);
    });
  }
});
