#!/usr/bin/env node
// A Node.js client of bertserve: @grpc/grpc-js and @grpc/proto-loader, with the contract's .proto
// files loaded at run time from the repository's protos/ directory (no generated code).
//
// It runs every call of the contract that a client needs, and prints what it got as one JSON object
// on stdout: Embed (tensor decoding), Similarity, Tokenize and Answer (UTF-16 offsets sliced with
// JavaScript's own String.prototype.slice), EmbedStream (with a per-item error), the standard health service, and the
// errors a client must handle (NOT_FOUND; RESOURCE_EXHAUSTED with its retry hint).
//
// Environment:
//   BERTSERVE_TARGET         host:port of the server (localhost:50051)
//   BERTSERVE_MODEL          model for Embed, Similarity, Tokenize and EmbedStream ("": the server's default model)
//   BERTSERVE_QA_MODEL       model for Answer (spanbert, as in the server's default configuration)
//   BERTSERVE_TIGHT_MODEL    model to overload for the RESOURCE_EXHAUSTED demo (BERTSERVE_MODEL)
//   BERTSERVE_BURST_CALLS    concurrent Embed calls of that burst (16)
//   BERTSERVE_BURST_INPUTS   inputs per call of that burst (4; at most what the model ever queues)
//   BERTSERVE_TOKEN          bearer token, for a server with token auth
//   BERTSERVE_TLS_CA         PEM file of the CA that signed the server's certificate: TLS instead of plaintext
//   BERTSERVE_PROTOS         the protos/ directory (the repository's, next to this example)

import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
// The standard grpc.health.v1 contract, as the gRPC project ships it (health/v1/health.proto).
import healthCheck from 'grpc-health-check';

const HERE = dirname(fileURLToPath(import.meta.url));
const PROTOS = resolve(process.env.BERTSERVE_PROTOS ?? join(HERE, '..', '..', 'protos'));
const TARGET = process.env.BERTSERVE_TARGET || 'localhost:50051';
const MODEL = process.env.BERTSERVE_MODEL ?? '';
const QA_MODEL = process.env.BERTSERVE_QA_MODEL || 'spanbert';
const TIGHT_MODEL = process.env.BERTSERVE_TIGHT_MODEL ?? MODEL;
const BURST_CALLS = Number(process.env.BERTSERVE_BURST_CALLS || 16);
const BURST_INPUTS = Number(process.env.BERTSERVE_BURST_INPUTS || 4);
const TOKEN = process.env.BERTSERVE_TOKEN ?? '';
const TLS_CA = process.env.BERTSERVE_TLS_CA ?? '';

const LOADER_OPTIONS = {
  keepCase: true, // field names as the .proto spells them: offset_unit, not offsetUnit
  enums: String, // enum values as their names ('POOLING_MEAN'), in responses and requests alike
  longs: String, // uint64 fields (Usage's counters) as decimal strings: exact past 2^53 (Number would round)
  defaults: true, // fields the server left unset come back with their defaults (0, '', [], false)
  oneofs: true, // a virtual field names the member a oneof holds: EmbedStreamResponse.result is 'response' or 'error'
  // bytes stay Buffers (the default): Tensor.data below.
  includeDirs: [PROTOS], // where `import "bertserve/v1/common.proto"` is found
};

const MiB = 1024 * 1024;
const CHANNEL_OPTIONS = {
  // grpc-js refuses any reply over 4 MiB by default (RESOURCE_EXHAUSTED, "Received message larger
  // than max"). The server sends replies up to its max_send_message_bytes, 64 MiB by default: token
  // embeddings of a batch pass 4 MiB soon (64 inputs x 256 tokens x 384 floats x 4 bytes = 24 MiB).
  'grpc.max_receive_message_length': 64 * MiB,
  // grpc-js sends any size; the server takes up to max_receive_message_bytes (64 MiB) per message
  // and max_input_bytes (8 MiB) per request or stream item.
};

const definition = protoLoader.loadSync(
  [
    'bertserve/v1/common.proto',
    'bertserve/v1/encoder_service.proto',
    'bertserve/v1/model_service.proto',
    healthCheck.protoPath, // an absolute path, found without includeDirs
  ],
  LOADER_OPTIONS,
);
const api = grpc.loadPackageDefinition(definition);

// ---------------------------------------------------------------------------------------------
// Enum names are checked before sending. protobufjs (under proto-loader) turns a request object
// into protobuf with fromObject, which silently DROPS an enum name it does not know, and a field
// name it does not know: { pooling: 'POOLING_AVERAGE' } goes out as "unset", and the server uses
// the model's default pooling; { offset_unit: 'OFFSET_UNIT_UTF16' } (or { offsetUnit: ... } with
// keepCase) goes out as code points, and every slice after an emoji is wrong. No error anywhere.
//
// The safe way: take enum names from the loaded definition (definition['bertserve.v1.Pooling'].type
// .value lists the names and numbers the contract has) and check every request against it, as
// checked() does, or send the numbers of those generated values. A typo then fails here, loudly.
// ---------------------------------------------------------------------------------------------

/** The full name of a type that `name` refers to from inside `scope`, by protobuf's scoping rules. */
function resolveType(scope, name) {
  if (name.startsWith('.')) return name.slice(1);
  const parts = scope.split('.');
  for (let i = parts.length; i >= 0; i--) {
    const candidate = [...parts.slice(0, i), name].join('.');
    if (definition[candidate]) return candidate;
  }
  throw new Error(`type ${name} (from ${scope}) is not in the loaded protos`);
}

/** The enum's value names, as the loaded .proto files declare them. */
function enumNames(fullName) {
  return definition[fullName].type.value.map((v) => v.name);
}

/** Returns `request` unchanged after checking its field names and enum names against the message type `typeName`. */
function checked(typeName, request, path = typeName) {
  const fields = new Map(definition[typeName].type.field.map((f) => [f.name, f]));
  for (const [key, value] of Object.entries(request)) {
    const field = fields.get(key);
    if (!field) throw new TypeError(`${path}: no field '${key}' (fields: ${[...fields.keys()].join(', ')})`);
    if (value === undefined || value === null) continue;
    const values = field.label === 'LABEL_REPEATED' ? value : [value];
    for (const item of values) {
      if (field.type === 'TYPE_ENUM') {
        const names = enumNames(resolveType(typeName, field.typeName));
        if (!names.includes(item)) {
          throw new TypeError(`${path}.${key}: ${JSON.stringify(item)} is not one of ${names.join(', ')}`);
        }
      } else if (field.type === 'TYPE_MESSAGE') {
        checked(resolveType(typeName, field.typeName), item, `${path}.${key}`);
      }
    }
  }
  return request;
}

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

function callMetadata() {
  const metadata = new grpc.Metadata();
  if (TOKEN) metadata.set('authorization', `Bearer ${TOKEN}`);
  return metadata;
}

/** One unary call as a promise; rejects with the grpc-js ServiceError (code, details, metadata). */
function unary(client, method, request, timeoutMs = 60_000) {
  return new Promise((resolveCall, reject) => {
    const options = { deadline: Date.now() + timeoutMs };
    client[method](request, callMetadata(), options, (err, response) => (err ? reject(err) : resolveCall(response)));
  });
}

/** A bidirectional EmbedStream: writes every request, then resolves with the responses in order. */
function embedStream(client, requests, timeoutMs = 60_000) {
  return new Promise((resolveCall, reject) => {
    const call = client.EmbedStream(callMetadata(), { deadline: Date.now() + timeoutMs });
    const responses = [];
    call.on('data', (response) => responses.push(response));
    call.on('error', reject); // the stream itself failed (deadline, auth, server gone), not one item
    call.on('end', () => resolveCall(responses));
    // A long stream should wait for 'drain' whenever write() returns false; a few items need not.
    for (const request of requests) call.write(checked('bertserve.v1.EmbedStreamRequest', { request }));
    call.end();
  });
}

/** A rejected call as plain JSON: the numeric code, its name and the status message. */
function describeError(err) {
  return { code: err.code, code_name: grpc.status[err.code], message: err.details };
}

/** The first value of a metadata key as a number, or null when the server did not send it. */
function metadataNumber(metadata, key) {
  const [value] = metadata?.get(key) ?? [];
  const number = Number(value);
  return value === undefined || !Number.isFinite(number) ? null : number; // a malformed hint is no hint
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The server's retry hint of a refusal, in milliseconds; null when it sent none. */
function retryHintMs(err) {
  return metadataNumber(err.metadata, 'retry-after-ms') ?? metadataNumber(err.metadata, 'grpc-retry-pushback-ms');
}

/**
 * Sends call() again after the RESOURCE_EXHAUSTED refusal err, each time after waiting as long as
 * the latest refusal's hint says, plus up to half that again at random: callers refused together
 * then come back spread out, not all at once into a full queue again. A RESOURCE_EXHAUSTED without
 * a hint is not retried: grpc-js itself raises one for a reply over its receive limit, and the same
 * call would fail the same way again.
 */
async function retryAfter(err, call, retries = 8) {
  for (let retry = 1; ; retry++) {
    const hint = retryHintMs(err);
    if (hint === null) throw err;
    await sleep(hint * (1 + Math.random() / 2));
    try {
      return { response: await call(), retries: retry };
    } catch (e) {
      if (e.code !== grpc.status.RESOURCE_EXHAUSTED || retry === retries) throw e;
      err = e;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tensors: Tensor.data is packed little-endian float32, row-major; Tensor.shape its dimensions.
// ---------------------------------------------------------------------------------------------

/** The tensor's values as a Float32Array, with its shape. */
function decodeTensor({ data, shape }) {
  const dims = shape.map(Number);
  const count = dims.reduce((a, b) => a * b, 1);
  if (data.length !== 4 * count) throw new Error(`tensor of shape [${dims}] has ${data.length} bytes`);
  // `data` is a Buffer over the received message: it starts at data.byteOffset of a larger
  // ArrayBuffer, and that offset is usually not a multiple of 4. So new Float32Array(data.buffer,
  // data.byteOffset, count) throws a RangeError, and new Float32Array(data.buffer) reads other
  // bytes. Read it through a DataView, which takes any offset and says the byte order (true:
  // little-endian), or copy it first: new Float32Array(Uint8Array.from(data).buffer).
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) values[i] = view.getFloat32(4 * i, true);
  return { shape: dims, values };
}

/** A 2-D tensor's rows as arrays of numbers. */
function rows(tensor) {
  const { shape, values } = decodeTensor(tensor);
  const [height, width] = shape;
  return Array.from({ length: height }, (_, r) => Array.from(values.subarray(r * width, (r + 1) * width)));
}

// ---------------------------------------------------------------------------------------------
// The demos
// ---------------------------------------------------------------------------------------------

const EMBED_TEXTS = ['A man is playing a guitar.', 'Someone plays an instrument.', 'Zoë met 👩🏽‍🚀 in Zürich'];
const TOKENIZE_TEXT = 'Zoë met 👩🏽‍🚀 in Zürich';
const QUESTION = 'Where did it fly to?';
const CONTEXT = '🚀 Launches: the rocket Ünity flew from Cañaveral 🌍 to the Moon in 1969.';
// UTF-16 code units: the unit of JavaScript's string indices, so text.slice(start, end) is the
// token. Code points (the default) would be off by one for each emoji outside the BMP before it.
const OFFSET_UNIT = 'OFFSET_UNIT_UTF16_CODE_UNIT';

async function embed(encoder) {
  const request = checked('bertserve.v1.EmbedRequest', {
    model: MODEL,
    inputs: EMBED_TEXTS,
    pooling: 'POOLING_MEAN',
    normalize: true,
  });
  const response = await unary(encoder, 'Embed', request);
  return {
    model: response.model,
    texts: EMBED_TEXTS,
    shape: response.embeddings.shape,
    embeddings: rows(response.embeddings),
    token_counts: response.token_counts,
    usage: response.usage, // uint64 counters as strings (longs: String)
  };
}

async function similarity(encoder) {
  const [source, ...sentences] = EMBED_TEXTS;
  const request = checked('bertserve.v1.SimilarityRequest', { model: MODEL, source_sentence: source, sentences });
  const response = await unary(encoder, 'Similarity', request);
  return { model: response.model, source_sentence: source, sentences, scores: response.scores };
}

async function tokenize(encoder) {
  const request = checked('bertserve.v1.TokenizeRequest', {
    model: MODEL,
    inputs: [TOKENIZE_TEXT],
    offset_unit: OFFSET_UNIT,
  });
  const response = await unary(encoder, 'Tokenize', request);
  const [t] = response.tokenizations;
  return {
    model: response.model,
    text: TOKENIZE_TEXT,
    offset_unit: OFFSET_UNIT,
    tokens: t.tokens.map((token, i) => {
      const { start, end } = t.offsets[i];
      const special = t.special_tokens_mask[i] === 1;
      return { token, id: t.ids[i], special, start, end, piece: TOKENIZE_TEXT.slice(start, end) };
    }),
  };
}

async function answer(encoder) {
  const request = checked('bertserve.v1.AnswerRequest', {
    model: QA_MODEL,
    questions: [{ question: QUESTION, context: CONTEXT }],
    top_k: 3,
    offset_unit: OFFSET_UNIT,
  });
  const response = await unary(encoder, 'Answer', request);
  const [result] = response.results;
  return {
    model: response.model,
    question: QUESTION,
    context: CONTEXT,
    offset_unit: OFFSET_UNIT,
    answers: result.answers.map(({ text, start, end, score }) => {
      const slice = CONTEXT.slice(start, end);
      return { text, start, end, score, slice, matches: slice === text };
    }),
  };
}

async function stream(encoder) {
  const items = [
    { model: MODEL, inputs: ['The first item of the stream.'], normalize: true },
    { model: MODEL, inputs: [''] }, // an empty input: this item fails alone (INVALID_ARGUMENT)
    { model: MODEL, inputs: ['The third item', 'has two texts.'], normalize: true },
  ];
  const responses = await embedStream(encoder, items);
  return responses.map((response, index) => {
    const inputs = items[index].inputs;
    if (response.result === 'error') {
      const { code, message } = response.error; // google.rpc.Code, as a unary call would fail
      return { index, inputs, error: { code, code_name: grpc.status[code], message } };
    }
    const { model, embeddings } = response.response;
    return { index, inputs, model, shape: embeddings.shape, embeddings: rows(embeddings) };
  });
}

async function health(healthClient, model) {
  const statuses = {};
  for (const service of ['', model]) {
    // '' is the whole server; each model has its own entry under its name.
    const request = checked('grpc.health.v1.HealthCheckRequest', { service });
    try {
      statuses[service] = (await unary(healthClient, 'Check', request, 10_000)).status;
    } catch (err) {
      statuses[service] = describeError(err); // NOT_FOUND for a name the server does not know
    }
  }
  return statuses;
}

async function notFound(encoder) {
  try {
    await unary(encoder, 'Embed', checked('bertserve.v1.EmbedRequest', { model: 'no-such-model', inputs: ['hello'] }));
    return null;
  } catch (err) {
    return describeError(err);
  }
}

async function resourceExhausted(encoder) {
  // More concurrent work than the model queues: the server refuses the surplus at once with
  // RESOURCE_EXHAUSTED, and trailing metadata retry-after-ms (and grpc-retry-pushback-ms, gRPC's
  // own) says when the queue will have drained. Metadata values are strings (keys ending -bin: Buffers).
  const long = 'a sentence long enough to keep the model busy for a while '.repeat(20);
  const requests = Array.from({ length: BURST_CALLS }, (_, i) =>
    checked('bertserve.v1.EmbedRequest', {
      model: TIGHT_MODEL,
      inputs: Array.from({ length: BURST_INPUTS }, (_, j) => `${i}.${j} ${long}`),
    }),
  );
  const isRefusal = (err) => err.code === grpc.status.RESOURCE_EXHAUSTED;
  // The first call refused is sent again after the wait its refusal's hint says, while the rest
  // of the burst may still fill the queue. (Its outcome is settled into a value at once: a promise
  // that rejects with no handler attached ends the Node process.)
  let retried = null;
  const send = (request) =>
    unary(encoder, 'Embed', request, 120_000).catch((err) => {
      if (isRefusal(err) && retried === null) {
        retried = retryAfter(err, () => unary(encoder, 'Embed', request, 120_000)).then(
          ({ retries }) => ({ served: true, retries }),
          (e) => ({ served: false, error: describeError(e) }),
        );
      }
      throw err;
    });
  const outcomes = await Promise.allSettled(requests.map(send));
  const rejected = outcomes.filter((o) => o.status === 'rejected').map((o) => o.reason);
  const refusals = rejected.filter(isRefusal);
  const others = rejected.filter((e) => !isRefusal(e)).map((e) => `${grpc.status[e.code]}: ${e.details}`);
  const summary = {
    model: TIGHT_MODEL,
    calls: BURST_CALLS,
    inputs_per_call: BURST_INPUTS,
    served: outcomes.filter((o) => o.status === 'fulfilled').length,
    refused: refusals.length,
    // INVALID_ARGUMENT here: BERTSERVE_BURST_INPUTS is more than the model ever queues.
    other_errors: [...new Set(others)],
    first_refusal: null,
    retried: null,
  };
  if (refusals.length) {
    const [err] = refusals;
    summary.first_refusal = {
      ...describeError(err),
      retry_after_ms: metadataNumber(err.metadata, 'retry-after-ms'), // what retryAfter() waits for
      grpc_retry_pushback_ms: metadataNumber(err.metadata, 'grpc-retry-pushback-ms'),
    };
    summary.retried = await retried;
  }
  return summary;
}

function enumPitfall() {
  // What the wire would carry for a misspelled pooling: a round trip through the loaded definition.
  const { requestSerialize, requestDeserialize } = definition['bertserve.v1.EncoderService'].Embed;
  const wrong = { model: MODEL, inputs: ['x'], pooling: 'POOLING_AVERAGE' };
  let rejected = null;
  try {
    checked('bertserve.v1.EmbedRequest', wrong);
  } catch (err) {
    rejected = err.message;
  }
  return {
    sent: wrong.pooling,
    server_would_see: requestDeserialize(requestSerialize(wrong)).pooling, // POOLING_UNSPECIFIED: the default
    known_names: enumNames('bertserve.v1.Pooling'),
    checked_rejects: rejected,
  };
}

async function main() {
  const credentials = TLS_CA ? grpc.credentials.createSsl(readFileSync(TLS_CA)) : grpc.credentials.createInsecure();
  const encoder = new api.bertserve.v1.EncoderService(TARGET, credentials, CHANNEL_OPTIONS);
  // The health client shares the encoder's channel (one connection for both).
  const healthClient = new api.grpc.health.v1.Health(TARGET, credentials, { channelOverride: encoder.getChannel() });
  try {
    const embedded = await embed(encoder);
    const result = {
      target: TARGET,
      embed: embedded,
      similarity: await similarity(encoder),
      tokenize: await tokenize(encoder),
      answer: await answer(encoder),
      stream: await stream(encoder),
      health: await health(healthClient, embedded.model),
      errors: { not_found: await notFound(encoder), resource_exhausted: await resourceExhausted(encoder) },
      enum_pitfall: enumPitfall(),
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } finally {
    encoder.close();
  }
}

main().catch((err) => {
  const reason = err.code !== undefined ? `${grpc.status[err.code]}: ${err.details}` : err.stack;
  console.error(`bertserve example: ${reason}`);
  process.exit(1);
});
