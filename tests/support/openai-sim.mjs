// A local stand-in for the OpenAI HTTP API, speaking its wire format on 127.0.0.1 (ephemeral
// port) so tests run the real `openai` client without a network.
//
// Routes: POST /v1/chat/completions (JSON and SSE), POST /v1/responses (JSON and SSE),
// POST /v1/embeddings, GET /v1/models; anything else is a 404 in OpenAI's error shape.
//
// Generated text is a sequence of words that are one token each in OpenAI's tokenizers
// (" the", " cat", ...), so "N completion tokens" and "N deltas" are the same number and the
// text of any prefix counts exactly.
//
// Every request is recorded (`requests`, `count(path)`), and every usage the sim REPORTED is
// recorded (`usages`), so tests compare what the SDK settled with what the provider billed.

import http from 'node:http';

/** One-token words (o200k and cl100k), cycled to build completions. */
export const WORDS = [' the', ' cat', ' sat', ' on', ' a', ' mat', ' and', ' then', ' it', ' slept'];

const DEFAULTS = {
  completionTokens: 8, // tokens generated when the request sets no lower max
  promptTokens: undefined, // number | (body, path) => number; default: a plausible count
  cachedTokens: 0,
  serviceTier: undefined, // reported when the request names none (echoed otherwise)
  latencyMs: 0, // before the response (or the first SSE byte)
  chunkDelayMs: 0, // between SSE events
  error: undefined, // { status, message?, type?, code?, param? } | (req) => that | undefined
  hang: false, // accept the request and never answer (until close())
  ignoreMaxTokens: false, // a provider that does not honour max_*_tokens
  content: undefined, // fixed assistant text (e.g. JSON for parse()); tokens = completionTokens
  embeddingDims: 8,
};

/** A plausible prompt token count (~4 characters per token plus chat overhead). */
export function plausiblePromptTokens(path, body) {
  const textTokens = (s) => Math.max(1, Math.ceil(String(s).length / 4));
  const contentTokens = (c) => {
    if (c == null) return 0;
    if (typeof c === 'string') return textTokens(c);
    if (Array.isArray(c)) return c.reduce((n, p) => n + contentTokens(p?.text ?? p?.content ?? ''), 0);
    return textTokens(JSON.stringify(c));
  };
  if (path === '/v1/embeddings') {
    const inputs = Array.isArray(body.input) ? body.input : [body.input];
    return inputs.reduce((n, s) => n + (typeof s === 'string' ? textTokens(s) : s.length ?? 1), 0);
  }
  if (path === '/v1/responses') {
    let n = body.instructions ? 4 + textTokens(body.instructions) : 0;
    if (typeof body.input === 'string') return n + 4 + textTokens(body.input) + 3;
    for (const item of body.input ?? []) n += 4 + contentTokens(item.content);
    return n + 3;
  }
  let n = 3;
  for (const m of body.messages ?? []) n += 4 + contentTokens(m.content);
  return n;
}

function outputLimit(body) {
  const v = body.max_completion_tokens ?? body.max_tokens ?? body.max_output_tokens;
  return typeof v === 'number' ? v : Infinity;
}

function textOf(tokens) {
  let s = '';
  for (let i = 0; i < tokens; i++) s += WORDS[i % WORDS.length];
  return s;
}

function float32Base64(values) {
  return Buffer.from(new Float32Array(values).buffer).toString('base64');
}

/**
 * Starts a simulator. Options (all optional) are the DEFAULTS above; `set(patch)` changes them
 * between calls, `gate: true` holds every response until `release()`.
 */
export async function startSim(options = {}) {
  let opts = { ...DEFAULTS, ...options };
  const requests = [];
  const usages = [];
  let seq = 0;
  // reset() starts a new generation: a stream of an earlier test that ends late does not record
  // its usage into the next test's list.
  let generation = 0;
  let gateOpen = !opts.gate;
  let gateWaiters = [];
  let requestWaiters = [];
  const sockets = new Set();

  const waitGate = () => (gateOpen ? Promise.resolve() : new Promise((r) => gateWaiters.push(r)));
  const sleep = (ms) => (ms > 0 ? new Promise((r) => setTimeout(r, ms)) : Promise.resolve());

  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const raw = Buffer.concat(chunks).toString('utf8');
    let body = null;
    try {
      body = raw ? JSON.parse(raw) : null;
    } catch {
      body = raw;
    }
    const path = new URL(req.url, 'http://x').pathname;
    const record = { method: req.method, path, body, headers: req.headers, at: Date.now() };
    requests.push(record);
    for (const w of requestWaiters.slice()) w();
    const id = ++seq;
    const gen = generation;
    const bill = (u) => {
      if (gen === generation) usages.push(u);
    };
    try {
      await handle(req, res, record, id, bill);
    } catch (err) {
      if (!res.headersSent) sendJson(res, 500, { error: { message: String(err?.stack ?? err), type: 'sim_error' } });
      else res.destroy();
    }
  });
  server.keepAliveTimeout = 1000;
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  function sendJson(res, status, obj, extraHeaders = {}) {
    const text = JSON.stringify(obj);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      'x-request-id': `req_sim_${seq}`,
      ...extraHeaders,
    });
    res.end(text);
  }

  async function handle(req, res, record, id, bill) {
    const { path, body } = record;
    if (opts.hang) return; // never answers; close() destroys the socket
    await waitGate();
    await sleep(opts.latencyMs);
    const err = typeof opts.error === 'function' ? opts.error(record) : opts.error;
    if (err) {
      const status = err.status ?? 500;
      return sendJson(res, status, {
        error: {
          message: err.message ?? `simulated ${status}`,
          type: err.type ?? (status === 429 ? 'rate_limit_exceeded' : status >= 500 ? 'server_error' : 'invalid_request_error'),
          param: err.param ?? null,
          code: err.code ?? null,
        },
      }, status === 429 ? { 'retry-after-ms': '0' } : {});
    }
    if (req.method === 'GET' && path === '/v1/models') {
      return sendJson(res, 200, {
        object: 'list',
        data: [
          { id: 'gpt-4o-mini', object: 'model', created: 1721172741, owned_by: 'system' },
          { id: 'text-embedding-3-small', object: 'model', created: 1705948997, owned_by: 'system' },
        ],
      });
    }
    if (req.method !== 'POST' || !['/v1/chat/completions', '/v1/responses', '/v1/embeddings'].includes(path)) {
      return sendJson(res, 404, { error: { message: `Unknown request URL: ${req.method} ${path}`, type: 'invalid_request_error', param: null, code: 'unknown_url' } });
    }
    if (!body || typeof body !== 'object' || typeof body.model !== 'string') {
      return sendJson(res, 400, { error: { message: 'you must provide a model parameter', type: 'invalid_request_error', param: 'model', code: null } });
    }
    const promptTokens = typeof opts.promptTokens === 'function'
      ? opts.promptTokens(body, path)
      : opts.promptTokens ?? plausiblePromptTokens(path, body);
    const cached = Math.min(opts.cachedTokens ?? 0, promptTokens);
    if (path === '/v1/embeddings') return embeddings(res, body, promptTokens, id, bill);
    const limit = opts.ignoreMaxTokens ? Infinity : outputLimit(body);
    const perChoice = Math.min(opts.completionTokens, limit);
    const hitLimit = perChoice < opts.completionTokens;
    const text = opts.content ?? textOf(perChoice);
    const n = path === '/v1/chat/completions' ? body.n ?? 1 : 1;
    const tier = body.service_tier ?? opts.serviceTier;
    const usage = { path, id, input: promptTokens, cached, output: perChoice * n, serviceTier: tier ?? null, stream: !!body.stream };
    if (path === '/v1/chat/completions') {
      if (body.stream) return chatStream(res, body, usage, perChoice, hitLimit, id, tier, bill);
      bill(usage);
      return sendJson(res, 200, {
        id: `chatcmpl-sim-${id}`,
        object: 'chat.completion',
        created: Math.floor(Date.now() / 1000),
        model: body.model,
        choices: Array.from({ length: n }, (_, index) => ({
          index,
          message: { role: 'assistant', content: text, refusal: null, annotations: [] },
          logprobs: null,
          finish_reason: hitLimit ? 'length' : 'stop',
        })),
        usage: chatUsage(usage),
        service_tier: tier ?? 'default',
        system_fingerprint: 'fp_sim',
      });
    }
    // /v1/responses
    if (body.stream) return responsesStream(res, body, usage, perChoice, hitLimit, id, tier, bill);
    bill(usage);
    return sendJson(res, 200, responseObject(body, id, text, usage, hitLimit, tier, 'completed'));
  }

  function chatUsage(u) {
    return {
      prompt_tokens: u.input,
      completion_tokens: u.output,
      total_tokens: u.input + u.output,
      prompt_tokens_details: { cached_tokens: u.cached, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
    };
  }

  function responsesUsage(u) {
    return {
      input_tokens: u.input,
      input_tokens_details: { cached_tokens: u.cached },
      output_tokens: u.output,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: u.input + u.output,
    };
  }

  function responseObject(body, id, text, usage, hitLimit, tier, status) {
    const done = status === 'completed';
    return {
      id: `resp_sim_${id}`,
      object: 'response',
      created_at: Math.floor(Date.now() / 1000),
      status: done && hitLimit ? 'incomplete' : status,
      incomplete_details: done && hitLimit ? { reason: 'max_output_tokens' } : null,
      error: null,
      instructions: body.instructions ?? null,
      max_output_tokens: body.max_output_tokens ?? null,
      model: body.model,
      output: done
        ? [{ type: 'message', id: `msg_sim_${id}`, status: 'completed', role: 'assistant', content: [{ type: 'output_text', text, annotations: [], logprobs: [] }] }]
        : [],
      parallel_tool_calls: true,
      previous_response_id: null,
      service_tier: tier ?? 'default',
      temperature: 1,
      text: { format: { type: 'text' } },
      tool_choice: 'auto',
      tools: [],
      top_p: 1,
      truncation: 'disabled',
      usage: done ? responsesUsage(usage) : null,
      metadata: {},
    };
  }

  function startSse(res) {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-request-id': `req_sim_${seq}` });
  }

  // Writes one SSE frame; resolves false when the client went away.
  async function write(res, frame) {
    if (res.destroyed || res.writableEnded) return false;
    res.write(frame);
    if (opts.chunkDelayMs > 0) await sleep(opts.chunkDelayMs);
    return !res.destroyed;
  }

  async function chatStream(res, body, usage, perChoice, hitLimit, id, tier, bill) {
    const streamCut = (u, sent) => bill({ ...u, output: sent, cut: true });
    startSse(res);
    const includeUsage = body.stream_options?.include_usage === true;
    const base = { id: `chatcmpl-sim-${id}`, object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model: body.model, service_tier: tier ?? 'default', system_fingerprint: 'fp_sim' };
    const frame = (extra) => `data: ${JSON.stringify({ ...base, ...extra, ...(includeUsage ? { usage: null } : {}) })}\n\n`;
    const n = body.n ?? 1;
    let sent = 0;
    for (let c = 0; c < n; c++) {
      if (!(await write(res, frame({ choices: [{ index: c, delta: { role: 'assistant', content: '', refusal: null }, logprobs: null, finish_reason: null }] })))) return streamCut(usage, sent);
    }
    const pieces = opts.content != null ? [opts.content] : Array.from({ length: perChoice }, (_, i) => WORDS[i % WORDS.length]);
    for (const piece of pieces) {
      for (let c = 0; c < n; c++) {
        if (!(await write(res, frame({ choices: [{ index: c, delta: { content: piece }, logprobs: null, finish_reason: null }] })))) return streamCut(usage, sent);
      }
      sent++;
    }
    for (let c = 0; c < n; c++) {
      if (!(await write(res, frame({ choices: [{ index: c, delta: {}, logprobs: null, finish_reason: hitLimit ? 'length' : 'stop' }] })))) return streamCut(usage, sent);
    }
    // The usage is billed whether or not the client asked to see it. (A client that goes away
    // mid-stream is billed what was sent: streamCut.)
    bill(usage);
    if (includeUsage) {
      await write(res, `data: ${JSON.stringify({ ...base, choices: [], usage: chatUsage(usage) })}\n\n`);
    }
    await write(res, 'data: [DONE]\n\n');
    res.end();
  }

  async function responsesStream(res, body, usage, perChoice, hitLimit, id, tier, bill) {
    const streamCut = (u, sent) => bill({ ...u, output: sent, cut: true });
    startSse(res);
    let sn = 0;
    const ev = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sn++, ...data })}\n\n`;
    const itemId = `msg_sim_${id}`;
    const text = opts.content ?? textOf(perChoice);
    const pieces = opts.content != null ? [opts.content] : Array.from({ length: perChoice }, (_, i) => WORDS[i % WORDS.length]);
    const frames = [
      ev('response.created', { response: responseObject(body, id, '', usage, hitLimit, tier, 'in_progress') }),
      ev('response.in_progress', { response: responseObject(body, id, '', usage, hitLimit, tier, 'in_progress') }),
      ev('response.output_item.added', { output_index: 0, item: { type: 'message', id: itemId, status: 'in_progress', role: 'assistant', content: [] } }),
      ev('response.content_part.added', { item_id: itemId, output_index: 0, content_index: 0, part: { type: 'output_text', text: '', annotations: [], logprobs: [] } }),
    ];
    for (const f of frames) if (!(await write(res, f))) return streamCut(usage, 0);
    let sent = 0;
    for (const piece of pieces) {
      if (!(await write(res, ev('response.output_text.delta', { item_id: itemId, output_index: 0, content_index: 0, delta: piece, logprobs: [] })))) return streamCut(usage, sent);
      sent++;
    }
    const tail = [
      ev('response.output_text.done', { item_id: itemId, output_index: 0, content_index: 0, text, logprobs: [] }),
      ev('response.content_part.done', { item_id: itemId, output_index: 0, content_index: 0, part: { type: 'output_text', text, annotations: [], logprobs: [] } }),
      ev('response.output_item.done', { output_index: 0, item: { type: 'message', id: itemId, status: 'completed', role: 'assistant', content: [{ type: 'output_text', text, annotations: [], logprobs: [] }] } }),
    ];
    for (const f of tail) if (!(await write(res, f))) return streamCut(usage, sent);
    bill(usage);
    await write(res, ev('response.completed', { response: responseObject(body, id, text, usage, hitLimit, tier, 'completed') }));
    res.end();
  }

  function embeddings(res, body, promptTokens, id, bill) {
    const inputs = Array.isArray(body.input) && typeof body.input[0] !== 'number' ? body.input : [body.input];
    const dims = body.dimensions ?? opts.embeddingDims;
    const vec = (i) => Array.from({ length: dims }, (_, d) => ((i + 1) * (d + 1)) / 64);
    const b64 = body.encoding_format === 'base64';
    bill({ path: '/v1/embeddings', id, input: promptTokens, cached: 0, output: 0, serviceTier: null, stream: false });
    return sendJson(res, 200, {
      object: 'list',
      data: inputs.map((_, index) => ({ object: 'embedding', index, embedding: b64 ? float32Base64(vec(index)) : vec(index) })),
      model: body.model,
      usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
    });
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  const url = `http://127.0.0.1:${port}`;

  return {
    url,
    baseURL: `${url}/v1`,
    port,
    /** Every request received, in order: { method, path, body, headers, at }. */
    requests,
    /** Every usage the sim reported (billed): { path, input, cached, output, serviceTier, stream, cut? }. */
    usages,
    /** Requests received on a path (`/v1/chat/completions`, ...), or all when no path is given. */
    count(path) {
      return path ? requests.filter((r) => r.path === path).length : requests.length;
    },
    /** Changes options for later requests. */
    set(patch) {
      opts = { ...opts, ...patch };
    },
    /** Forgets recorded requests and usages. */
    reset() {
      generation++;
      requests.length = 0;
      usages.length = 0;
    },
    /** Lets held responses go (gate mode). */
    release() {
      gateOpen = true;
      const w = gateWaiters;
      gateWaiters = [];
      for (const r of w) r();
    },
    /** Closes the gate again: later responses are held until release(). */
    hold() {
      gateOpen = false;
    },
    /** Resolves once at least `n` requests arrived; rejects after `timeoutMs`. */
    waitForRequests(n, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (requests.length >= n) {
            clearTimeout(timer);
            requestWaiters = requestWaiters.filter((w) => w !== check);
            resolve(requests.length);
            return true;
          }
          return false;
        };
        const timer = setTimeout(() => {
          requestWaiters = requestWaiters.filter((w) => w !== check);
          reject(new Error(`sim: ${requests.length} requests after ${timeoutMs} ms, wanted ${n}`));
        }, timeoutMs);
        if (!check()) requestWaiters.push(check);
      });
    },
    async close() {
      this.release();
      server.closeAllConnections?.();
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(() => r()));
    },
  };
}

// ---- prices (gpt-4o-mini, text-embedding-3-small), integer nano-USD per token ----

export const PRICES_NANOS = {
  'gpt-4o-mini': { input: 150, cached: 75, output: 600 },
  'text-embedding-3-small': { input: 20, cached: 20, output: 0 },
};

/** True cost in nano-USD of one usage as the sim reported it ({ input, cached, output }). */
export function costNanos(usage, model = 'gpt-4o-mini') {
  const p = PRICES_NANOS[model];
  if (!p) throw new Error(`no test price for ${model}`);
  return (usage.input - usage.cached) * p.input + usage.cached * p.cached + usage.output * p.output;
}

/** Sum of costNanos over usages. */
export function sumCostNanos(usages, model = 'gpt-4o-mini') {
  return usages.reduce((n, u) => n + costNanos(u, model), 0);
}

/** USD float (as spend() reports it) to integer nano-USD. */
export const toNanos = (usd) => Math.round(usd * 1e9);
