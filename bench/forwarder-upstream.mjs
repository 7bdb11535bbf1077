// Upstream for bench/forwarder, in its own process: an echo server (latency) and a sink that answers
// "ok\n" once it has read the byte count announced in an 8-byte header (throughput). Prints
// {"echo":PORT,"sink":PORT} on stdout. Plain JavaScript on purpose: it needs nothing from the project.
import { createServer } from 'node:net';

const echo = createServer((s) => {
  s.setNoDelay(true);
  s.on('error', () => s.destroy());
  s.pipe(s);
});
const sink = createServer((s) => {
  s.on('error', () => s.destroy());
  let want = -1;
  let got = 0;
  let head = Buffer.alloc(0);
  s.on('data', (chunk) => {
    if (want < 0) {
      head = Buffer.concat([head, chunk]);
      if (head.length < 8) return;
      want = Number(head.readBigUInt64BE(0));
      got = head.length - 8;
    } else {
      got += chunk.length;
    }
    if (got >= want) s.end('ok\n');
  });
});
await Promise.all([echo, sink].map((srv) => new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve))));
process.stdout.write(`${JSON.stringify({ echo: echo.address().port, sink: sink.address().port })}\n`);
