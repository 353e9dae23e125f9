// HTTP interop peer built on the official Node SDK (npm iii-sdk 0.22.1 and its
// @iii-dev/helpers/http wrapper). Same routes and contract as ../py_http_peer.py:
//   node tests/interop/node/http_peer.mjs --url URL --prefix P
// prints {"event":"ready"} once registered, serves until stdin reaches EOF.

import { createHash } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { http } from '@iii-dev/helpers/http'
import { registerWorker } from 'iii-sdk'

for (const level of ['log', 'info', 'debug']) console[level] = (...a) => console.error(...a)

const { values } = parseArgs({ options: { url: { type: 'string' }, prefix: { type: 'string' } } })
const p = values.prefix

function* patternChunks(size) {
  for (let i = 0; size > 0; i++, size -= 65536) {
    const block = Buffer.alloc(65536, createHash('sha256').update(`iii-trio:${i}`).digest())
    yield size >= 65536 ? block : block.subarray(0, size)
  }
}

const write = (stream, chunk) =>
  new Promise((resolve, reject) => stream.write(chunk, (err) => (err ? reject(err) : resolve())))
const end = (stream) => new Promise((resolve) => stream.end(resolve))

const iii = registerWorker(values.url, { workerName: `${p}-node-http` })

const routes = {
  json: ['GET', async (data) => ({ status_code: 200, body: { sdk: 'node', query: data.query_params } })],
  upload: [
    'POST',
    http(async (req, res) => {
      const digest = createHash('sha256')
      let size = 0
      for await (const chunk of req.request_body.stream) {
        digest.update(chunk)
        size += chunk.length
      }
      res.status(200)
      res.headers({ 'content-type': 'application/json' })
      await write(res.stream, Buffer.from(JSON.stringify({ size, sha256: digest.digest('hex') })))
      await end(res.stream)
    }),
  ],
  download: [
    'GET',
    http(async (req, res) => {
      res.status(200)
      res.headers({ 'content-type': 'application/octet-stream' })
      for (const chunk of patternChunks(Number(req.query_params.size))) await write(res.stream, chunk)
      await end(res.stream)
    }),
  ],
  sse: [
    'GET',
    http(async (_req, res) => {
      res.status(200)
      res.headers({ 'content-type': 'text/event-stream' })
      for (let n = 0; n < 3; n++) {
        await write(res.stream, Buffer.from(`id: ${n}\ndata: tick ${n}\n\n`))
        await sleep(20)
      }
      await end(res.stream)
    }),
  ],
}

iii.registerFunction(`${p}::mw`, async (data) =>
  'x-deny' in data.request.headers
    ? { action: 'respond', response: { status_code: 403, body: { denied: true } } }
    : { action: 'continue' },
)
iii.registerFunction(`${p}::guarded`, async () => ({ status_code: 200, body: { guarded: 'passed' } }))
iii.registerTrigger({
  type: 'http',
  function_id: `${p}::guarded`,
  config: { api_path: `${p}/guarded`, http_method: 'GET', middleware_function_ids: [`${p}::mw`] },
})
for (const [name, [method, fn]] of Object.entries(routes)) {
  iii.registerFunction(`${p}::${name}`, fn)
  iii.registerTrigger({
    type: 'http',
    function_id: `${p}::${name}`,
    config: { api_path: `${p}/${name}`, http_method: method },
  })
}
process.stdout.write(`${JSON.stringify({ event: 'ready' })}\n`)
process.stdin.resume()
process.stdin.on('end', async () => {
  await iii.shutdown?.()
  process.exit(0)
})
