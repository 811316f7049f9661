#!/usr/bin/env node
// Cancelling calls from Node.js, as grpc-js does it: call.cancel() on unary calls and on streams,
// deadlines, and a client closed while its calls run. A caller that gives up should cancel: the
// server then drops the call's queued work instead of computing answers nobody reads.
//
// It cuts calls at each point a caller can (before a stream's first message, mid-pass, after N of
// M stream answers, right after the answers), then checks that the server still answers and that
// every model is SERVING, and prints what each cut call ended with as one JSON object on stdout.
//
// Environment:
//   BERTSERVE_TARGET      host:port of the server (localhost:50051)
//   BERTSERVE_MODEL       model for Embed and EmbedStream ("": the server's default model)
//   BERTSERVE_QA_MODEL    model for Answer ("": Answer is left out)
//   BERTSERVE_ENTRY       a model entry to load and cut mid-load ("": LoadModel is left out)
//   BERTSERVE_MODELS      comma-separated models whose health is checked at the end (the server's only)
//   BERTSERVE_ROUNDS      how many times each case runs (3)
//   BERTSERVE_TOKEN       bearer token, for a server with token auth
//   BERTSERVE_PROTOS      the protos/ directory (the repository's, next to this example)

import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import healthCheck from 'grpc-health-check';

const HERE = dirname(fileURLToPath(import.meta.url));
const PROTOS = resolve(process.env.BERTSERVE_PROTOS ?? join(HERE, '..', '..', 'protos'));
const TARGET = process.env.BERTSERVE_TARGET || 'localhost:50051';
const MODEL = process.env.BERTSERVE_MODEL ?? '';
const QA_MODEL = process.env.BERTSERVE_QA_MODEL ?? '';
const ENTRY = process.env.BERTSERVE_ENTRY ?? '';
const MODELS = (process.env.BERTSERVE_MODELS ?? '').split(',').filter(Boolean);
const ROUNDS = Number(process.env.BERTSERVE_ROUNDS || 3);
const TOKEN = process.env.BERTSERVE_TOKEN ?? '';

const definition = protoLoader.loadSync(
  ['bertserve/v1/encoder_service.proto', 'bertserve/v1/model_service.proto', healthCheck.protoPath],
  { keepCase: true, enums: String, longs: String, defaults: true, oneofs: true, includeDirs: [PROTOS] },
);
const api = grpc.loadPackageDefinition(definition);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const LONG = 'the quick brown fox jumps over the lazy dog near the river bank '.repeat(10);
const HEAVY = { model: MODEL, inputs: Array(48).fill(LONG), truncate: true };

function newClients() {
  const credentials = grpc.credentials.createInsecure();
  const options = { 'grpc.enable_retries': 0 }; // a cut call must not be sent again
  return {
    encoder: new api.bertserve.v1.EncoderService(TARGET, credentials, options),
    models: new api.bertserve.v1.ModelService(TARGET, credentials, options),
    health: new api.grpc.health.v1.Health(TARGET, credentials, options),
  };
}

function metadata() {
  const md = new grpc.Metadata();
  if (TOKEN) md.set('authorization', `Bearer ${TOKEN}`);
  return md;
}

const deadline = (ms = 60_000) => ({ deadline: Date.now() + ms });
const codeName = (err) => (err ? grpc.status[err.code] : 'OK');

/** Starts a unary call; returns the call (for cancel()) and a promise of its code's name. */
function unary(client, method, request, options = deadline()) {
  let call;
  const ended = new Promise((done) => {
    call = client[method](request, metadata(), options, (err) => done(codeName(err)));
  });
  return { call, ended };
}

/** How a stream ended: its error's code name, or OK. */
function streamEnded(call) {
  return new Promise((done) => {
    call.on('error', (err) => done(codeName(err)));
    call.on('end', () => done('OK'));
  });
}

const item = (text = 'one short item') => ({ request: { model: MODEL, inputs: [text] } });

const CASES = {
  // A stream opened and cancelled before its first message.
  async stream_before_first_message({ encoder }) {
    const call = encoder.EmbedStream(metadata(), deadline());
    const ended = streamEnded(call);
    await sleep(50); // grpc-js sends a stream's headers at once: the server has opened the call
    call.cancel();
    return ended;
  },
  // Many items sent (as fast as flow control lets), ten answers read, the stream cancelled.
  async stream_mid_stream({ encoder }) {
    const call = encoder.EmbedStream(metadata(), deadline());
    const ended = streamEnded(call);
    let answers = 0;
    const tenth = new Promise((r) => call.on('data', () => ++answers === 10 && r()));
    (async () => {
      for (let i = 0; i < 2000 && !call.destroyed; i++) {
        if (!call.write(item(`item ${i}`))) await new Promise((r) => call.once('drain', r));
      }
    })().catch(() => {});
    await tenth;
    call.cancel();
    return ended;
  },
  // Every answer read, the stream cancelled instead of half-closed.
  async stream_after_answers({ encoder }) {
    const call = encoder.EmbedStream(metadata(), deadline());
    const ended = streamEnded(call);
    let answers = 0;
    const all = new Promise((r) => call.on('data', () => ++answers === 5 && r()));
    for (let i = 0; i < 5; i++) call.write(item());
    await all;
    call.cancel();
    return ended;
  },
  // A heavy stream item mid-pass.
  async stream_mid_pass({ encoder }) {
    const call = encoder.EmbedStream(metadata(), deadline());
    const ended = streamEnded(call);
    call.write({ request: HEAVY });
    await sleep(30);
    call.cancel();
    return ended;
  },
  // A unary call cancelled as soon as it is started.
  async unary_at_once({ encoder }) {
    const { call, ended } = unary(encoder, 'Embed', HEAVY);
    call.cancel();
    return ended;
  },
  // A unary call cancelled while its passes run.
  async unary_mid_pass({ encoder }) {
    const { call, ended } = unary(encoder, 'Embed', HEAVY);
    await sleep(30);
    call.cancel();
    return ended;
  },
  // A deadline shorter than the work: grpc-js ends the call DEADLINE_EXCEEDED.
  async unary_deadline({ encoder }) {
    return unary(encoder, 'Embed', HEAVY, deadline(20)).ended;
  },
  async answer_mid_pass({ encoder }) {
    if (!QA_MODEL) return 'SKIPPED';
    const question = { question: 'what jumps over the dog?', context: LONG.repeat(3) };
    const { call, ended } = unary(encoder, 'Answer', { model: QA_MODEL, questions: Array(48).fill(question) });
    await sleep(30);
    call.cancel();
    return ended;
  },
  // A load cut mid-load: the load goes on; the caller just stops waiting for it.
  async load_mid_load({ models }) {
    if (!ENTRY) return 'SKIPPED';
    const { call, ended } = unary(models, 'LoadModel', { entry: ENTRY });
    await sleep(50);
    call.cancel();
    return ended;
  },
  // The whole client closed while a stream runs: its connection goes with it.
  async client_closed_mid_stream() {
    const clients = newClients();
    const call = clients.encoder.EmbedStream(metadata(), deadline());
    const ended = streamEnded(call);
    for (let i = 0; i < 200; i++) call.write(item(`item ${i}`));
    await new Promise((r) => call.once('data', r));
    for (const client of Object.values(clients)) client.close();
    call.cancel(); // close() leaves calls already running; this ends ours with the client
    return ended;
  },
};

async function healthOf(health, service) {
  return new Promise((done) =>
    health.Check({ service }, deadline(30_000), (err, reply) => done(err ? codeName(err) : reply.status)),
  );
}

async function main() {
  const clients = newClients();
  const cases = {};
  for (const [name, run] of Object.entries(CASES)) {
    cases[name] = [];
    for (let round = 0; round < ROUNDS; round++) cases[name].push(await run(clients));
  }
  // The server goes on: it answers, and every model serves.
  const { ended } = unary(clients.encoder, 'Embed', { model: MODEL, inputs: ['still here'] });
  const health = {};
  for (const service of ['', ...MODELS]) health[service] = await healthOf(clients.health, service);
  console.log(JSON.stringify({ cases, after: await ended, health }));
  for (const client of Object.values(clients)) client.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
