// Interop peer built on the official Node SDK (npm iii-sdk 0.22.1).
//
// usage: node tests/interop/node/peer.mjs --url ws://127.0.0.1:PORT --name NAME <mode> [options]
// See ../README.md for the contract and ../NOTES.md for SDK quirks. stdout carries only
// single-line JSON objects; logs go to stderr.
// Exit 0 = ok, 1 = failure reported as JSON, 2 = crash.

import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { InvocationError, TriggerAction, registerWorker } from 'iii-sdk'
import { createChannel } from 'iii-sdk/helpers'

const PEER = 'node'

// The SDK logs with console.debug/console.log, which Node writes to stdout: move them to stderr.
for (const level of ['log', 'info', 'debug']) console[level] = (...a) => console.error(...a)

const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`)

// InvocationError.message is "<code>: <message>" (the SDK keeps no separate message field).
const failure = (err) => ({
  ok: false,
  code: err.code,
  message: err.message.startsWith(`${err.code}: `)
    ? err.message.slice(err.code.length + 2)
    : err.message,
})

// DATA PATTERN: block i = sha256("iii-trio:" + i) repeated 2048 times (64 KiB); truncated to size.
function* patternChunks(size) {
  for (let i = 0; size > 0; i++, size -= 65536) {
    const block = Buffer.alloc(65536, createHash('sha256').update(`iii-trio:${i}`).digest())
    yield size >= 65536 ? block : block.subarray(0, size)
  }
}

// Messages, then `size` pattern bytes in 64 KiB writes, then a clean close.
// writer.stream's final() only closes a socket that exists, so with nothing written the Close
// would never be sent and the reader would hang: open it first (private ensureConnected()).
// pipeline() awaits every write callback and then end() -> final(): wait for open, 10 ms,
// close(1000, "stream_complete"); it rejects if the socket errors or closes early.
async function writeStream(writer, size, messages) {
  writer.ensureConnected()
  for (const msg of messages) writer.sendMessage(msg) // queued in order ahead of the data
  const digest = createHash('sha256')
  const chunks = function* () {
    for (const chunk of patternChunks(size)) {
      digest.update(chunk)
      yield chunk
    }
  }
  await pipeline(Readable.from(chunks(), { objectMode: false }), writer.stream)
  return digest.digest('hex')
}

// Read to EOF (the socket opens when the stream is first read); text frames via onMessage.
async function readStream(reader) {
  const messages = []
  reader.onMessage((msg) => messages.push(msg))
  const digest = createHash('sha256')
  let size = 0
  for await (const chunk of reader.stream) {
    digest.update(chunk)
    size += chunk.length
  }
  return { size, sha256: digest.digest('hex'), messages }
}

function connected(iii) {
  // 0.22.1 has no connection-state API or event; iii.ws (internal) is replaced on every
  // reconnect, so poll it. readyState turns OPEN just before the SDK's synchronous 'open'
  // handler (replay registrations, flush queued messages) runs, so a later tick sees it done.
  return new Promise((resolve) => {
    const check = () => (iii.ws?.readyState === 1 ? resolve() : setTimeout(check, 10))
    check()
  })
}

async function serve(iii, opts) {
  const stopped = new Promise((resolve) => {
    process.once('SIGTERM', resolve)
    process.once('SIGINT', resolve)
    process.stdin.on('end', resolve).on('error', resolve).resume()
  })
  const p = opts.prefix
  const fns = {
    echo: async (data) => {
      if (data === undefined) data = null // an engine may forward a missing "data"
      if (data && typeof data === 'object' && !Array.isArray(data)) {
        const { _caller_worker_id, ...rest } = data
        data = rest
      }
      return { echo: data, peer: PEER }
    },
    fail: async (data) => {
      throw new Error(`boom: ${data.why}`)
    },
    sink: async (data) => readStream(data.reader),
    source: async (data) => {
      const size = Number(data.size)
      return { size, sha256: await writeStream(data.writer, size, data.messages ?? []) }
    },
    slow: async (data) => {
      await sleep(data.ms)
      return { slept: data.ms }
    },
  }
  for (const [suffix, fn] of Object.entries(fns)) iii.registerFunction(`${p}::${suffix}`, fn)
  // Readiness barrier: registerfunction has no ack; a round trip through our own echo proves
  // the engine processed the registrations (sent earlier on the same socket).
  try {
    const timeoutMs = opts['timeout-ms'] ?? 10000
    await iii.trigger({ function_id: `${p}::echo`, payload: { ready_probe: true }, timeoutMs })
  } catch (err) {
    if (!(err instanceof InvocationError)) throw err
    emit({ event: 'error', ...failure(err) })
    return 1
  }
  emit({ event: 'ready' })
  await stopped
  process.stdin.destroy()
  return 0
}

function triggerRequest(opts, payload) {
  const req = { function_id: opts.function, payload }
  if (opts['timeout-ms']) req.timeoutMs = opts['timeout-ms']
  return req
}

async function call(iii, opts) {
  // @PATH: read the JSON from a file (argv is limited to 128 KiB)
  const { payload: arg } = opts
  const text = arg.startsWith('@') ? readFileSync(arg.slice(1), 'utf8') : arg
  const req = triggerRequest(opts, JSON.parse(text))
  if (opts.void) req.action = TriggerAction.Void()
  await connected(iii) // a void trigger made before 'open' is only queued; shutdown would drop it
  try {
    emit({ ok: true, result: (await iii.trigger(req)) ?? null })
    return 0
  } catch (err) {
    if (!(err instanceof InvocationError)) throw err
    emit(failure(err))
    return 1
  }
}

async function withChannel(iii, opts, push) {
  const size = opts.size
  const messages = JSON.parse(opts.messages)
  const channel = await createChannel(iii)
  const local = push ? writeStream(channel.writer, size, messages) : readStream(channel.reader)
  local.catch(() => {}) // awaited below; avoid an unhandled rejection while the trigger runs
  const payload = push
    ? { reader: channel.readerRef }
    : { writer: channel.writerRef, size, messages }
  let result
  try {
    result = await iii.trigger(triggerRequest(opts, payload))
  } catch (err) {
    if (!(err instanceof InvocationError)) throw err
    const ours = push ? channel.writer : channel.reader
    ours.stream.destroy() // terminates our channel socket
    emit(failure(err))
    return 1
  }
  const done = await local
  emit({ ok: true, result, ...(push ? { sha256: done } : done) })
  return 0
}

async function main() {
  const { values: opts, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      name: { type: 'string' },
      prefix: { type: 'string' },
      function: { type: 'string' },
      payload: { type: 'string', default: 'null' },
      'timeout-ms': { type: 'string' },
      void: { type: 'boolean', default: false },
      size: { type: 'string', default: '0' },
      messages: { type: 'string', default: '[]' },
    },
  })
  const mode = positionals[0]
  const modes = ['serve', 'call', 'push', 'pull']
  if (!opts.url || !opts.name || !modes.includes(mode) || positionals.length !== 1)
    throw new Error('usage: peer.mjs --url URL --name NAME serve|call|push|pull [options]')
  if ((mode === 'serve') !== Boolean(opts.prefix) || (mode !== 'serve' && !opts.function))
    throw new Error('serve needs --prefix; call/push/pull need --function')
  opts.size = Number(opts.size)
  if (opts['timeout-ms']) opts['timeout-ms'] = Number(opts['timeout-ms'])

  const options = { workerName: opts.name, otel: { enabled: false }, enableMetricsReporting: false }
  const iii = registerWorker(opts.url, options)
  try {
    if (mode === 'serve') return await serve(iii, opts)
    if (mode === 'call') return await call(iii, opts)
    return await withChannel(iii, opts, mode === 'push')
  } finally {
    await iii.shutdown() // sends Close on the control socket; the process then exits by itself
  }
}

process.on('uncaughtException', (err) => {
  console.error(err)
  process.exit(2)
})
main().then(
  (code) => {
    process.exitCode = code
    // Exit naturally so queued socket writes (e.g. Close frames) are flushed; force it if a
    // leftover handle (a channel socket of an interrupted invocation) would keep us alive.
    setTimeout(() => process.exit(code), 2000).unref()
  },
  (err) => {
    console.error(err)
    process.exit(2)
  },
)
