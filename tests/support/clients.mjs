// The real openai packages the SDK must support, for tests that run the same cases on each.

import OpenAIv6 from 'openai';
import OpenAIv7 from 'openai-v7';

export const CLIENTS = [
  { name: 'openai@6', OpenAI: OpenAIv6 },
  { name: 'openai@7', OpenAI: OpenAIv7 },
];

/** A structured-output format that `parse()` understands without zod. */
export const ANSWER_FORMAT = {
  type: 'json_schema',
  json_schema: {
    name: 'answer',
    strict: true,
    schema: { type: 'object', properties: { answer: { type: 'string' } }, required: ['answer'], additionalProperties: false },
  },
};

/** A client on the simulator: no retries, a bounded timeout. */
export function clientFor(OpenAI, sim, extra = {}) {
  return new OpenAI({ apiKey: 'sk-test', baseURL: sim.baseURL, maxRetries: 0, timeout: 10_000, ...extra });
}

export const OFFICIAL_BASE_URL = 'https://api.openai.com/v1';

/**
 * A client configured with OpenAI's real baseURL whose `fetch` forwards to the simulator, for
 * behaviour that depends on the provider being recognised from the baseURL.
 */
export function officialClientFor(OpenAI, sim, extra = {}) {
  const forward = (url, init) => fetch(String(url).replace(OFFICIAL_BASE_URL, sim.baseURL), init);
  return new OpenAI({ apiKey: 'sk-test', baseURL: OFFICIAL_BASE_URL, fetch: forward, maxRetries: 0, timeout: 10_000, ...extra });
}
