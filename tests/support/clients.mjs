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
