/**
 * bench/forwarder: what `keygate forward` (TCP listen mode, its own process) adds over a direct
 * connection to the same upstream (an echo server and a byte sink, in a third process).
 *
 * - Latency: 64-byte echo round trips with 1, 100 and 1000 connections open, two ways:
 *   `serial` (one round trip in flight, cycling over the open connections: the forwarder's own cost
 *   per message while it holds N connections) and `allInFlight` (every connection sends at once:
 *   queueing in the forwarder's single event loop dominates). Added = via forwarder − direct, each the
 *   best (lowest p99) of 3 interleaved runs: the machine is shared, and one burst elsewhere is not the forwarder.
 * - Throughput: 100 MB through one connection, best of 5 (interleaved), MB/s direct and via the forwarder.
 *   The same client (this process, 64 KB writes) and sink (the upstream process, Node's 64 KB reads) in
 *   both modes: direct is 2 processes on the machine's cores, via is 3 (client, forwarder, sink). Each
 *   process's CPU per 100 MB (/proc schedstat, all threads) is reported beside, so a shared machine's
 *   scheduling can be told apart from the forwarder's own cost. The forwarder relays with splice(2) in
 *   the native addon when it is built ("relay"); a second forwarder with --relay js (Node streams)
 *   runs in the same run for comparison (viaJsMBps, throughputRatioJs).
 * - Memory per idle connection: the forwarder's RSS (/proc) and open descriptors before and after 1000 idle relays.
 * Goal (issue 15): p99 added < 1 ms at 1000 connections, throughput ≥ 80 % of direct.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { quantile, writeResults } from './harness.js';

const BIN = fileURLToPath(new URL('../bin/keygate.js', import.meta.url));
const UPSTREAM = fileURLToPath(new URL('./forwarder-upstream.mjs', import.meta.url));
const LEVELS = (process.env.BENCH_FORWARDER_CONNECTIONS ?? '1,100,1000').split(',').map(Number);
const TRANSFER_MB = Number(process.env.BENCH_FORWARDER_MB ?? 100);
const PING = Buffer.alloc(64, 0x61);
const RUNS = Number(process.env.BENCH_FORWARDER_RUNS ?? 3);

/** Spawns a process and resolves with it once a stdout line matches `pattern`. */
function start(argv: string[], pattern: RegExp): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'ignore'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const match = pattern.exec(out);
      if (match) resolve({ child, match });
    });
    child.once('exit', (code) => reject(new Error(`${argv.join(' ')} exited ${code}`)));
  });
}

/** User + system CPU milliseconds the process `pid` has used so far (/proc, clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** CPU milliseconds (ns resolution) all threads of `pid` have run so far (/proc/PID/task/TID/schedstat). */
function runMs(pid: number): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return ns / 1e6;
}

const fdCount = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** A connection to `port` (direct), or through the forwarder on `via` with CONNECT 127.0.0.1:port. */
function open(port: number, via?: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: via ?? port, noDelay: true });
    socket.once('error', reject);
    socket.once('connect', () => {
      if (via === undefined) return resolve(socket);
      socket.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\n\r\n`);
      let head = '';
      const onData = (d: Buffer): void => {
        head += d.toString('latin1');
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        socket.off('data', onData);
        if (!head.startsWith('HTTP/1.1 200')) return reject(new Error(`forwarder answered ${head.split('\r\n')[0]}`));
        if (head.length > end + 4) return reject(new Error('unexpected bytes after the CONNECT reply'));
        resolve(socket);
      };
      socket.on('data', onData);
    });
  });
}

async function openMany(n: number, port: number, via?: number): Promise<Socket[]> {
  const out: Socket[] = [];
  // In batches: a thousand SYNs at once overflow the listen backlog and measure retransmits instead.
  for (let i = 0; i < n; i += 100) out.push(...(await Promise.all(Array.from({ length: Math.min(100, n - i) }, () => open(port, via)))));
  return out;
}

/** One 64-byte echo round trip on `socket`, in milliseconds. */
function ping(socket: Socket): Promise<number> {
  return new Promise((resolve) => {
    let got = 0;
    const t0 = performance.now();
    const onData = (d: Buffer): void => {
      got += d.length;
      if (got < PING.length) return;
      socket.off('data', onData);
      resolve(performance.now() - t0);
    };
    socket.on('data', onData);
    socket.write(PING);
  });
}

interface Latency { p50: number; p99: number; samples: number }

async function latency(sockets: Socket[], mode: 'serial' | 'allInFlight'): Promise<Latency> {
  const samples: number[] = [];
  if (mode === 'serial') {
    const n = Math.max(2000, sockets.length * 2);
    for (let i = 0; i < 200; i++) await ping(sockets[i % sockets.length]!); // warm-up
    for (let i = 0; i < n; i++) samples.push(await ping(sockets[i % sockets.length]!));
  } else {
    const rounds = Math.max(5, Math.ceil(2000 / sockets.length));
    await Promise.all(sockets.map(ping)); // warm-up
    for (let r = 0; r < rounds; r++) samples.push(...(await Promise.all(sockets.map(ping))));
  }
  samples.sort((a, b) => a - b);
  return { p50: quantile(samples, 0.5), p99: quantile(samples, 0.99), samples: samples.length };
}

/** Seconds to push `mb` MB through one connection to the sink and read its "ok". */
async function transfer(port: number, mb: number, via?: number): Promise<number> {
  const socket = await open(port, via);
  const total = mb * 1024 * 1024;
  const chunk = Buffer.alloc(64 * 1024, 0x62);
  const t0 = performance.now();
  const done = new Promise<void>((resolve, reject) => {
    socket.on('data', (d: Buffer) => (d.toString().includes('ok') ? resolve() : undefined));
    socket.once('error', reject);
  });
  const head = Buffer.alloc(8);
  head.writeBigUInt64BE(BigInt(total));
  socket.write(head);
  for (let sent = 0; sent < total; sent += chunk.length) {
    if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  await done;
  const seconds = (performance.now() - t0) / 1000;
  socket.destroy();
  return seconds;
}

const closeAll = (sockets: Socket[]): void => sockets.forEach((s) => s.destroy());

export async function benchForwarder(): Promise<Record<string, unknown>> {
  const upstream = await start([UPSTREAM], /(\{.*\})\n/);
  const { echo, sink } = JSON.parse(upstream.match[1]!) as { echo: number; sink: number };
  const startForwarder = (relay: 'auto' | 'js') =>
    start(
      [BIN, 'forward', '--listen', 'tcp:127.0.0.1:0', '--allow', `127.0.0.1:${echo}`, '--allow', `127.0.0.1:${sink}`, '--max-connections', '5000', '--idle-timeout', '10m', '--relay', relay],
      /listening on tcp:127\.0\.0\.1:(\d+).*; relay: (\w+)/,
    );
  const forwarder = await startForwarder('auto');
  const forwarderJs = await startForwarder('js');
  const fwd = Number(forwarder.match[1]);
  const fwdJs = Number(forwarderJs.match[1]);
  // Which relay `keygate forward` chose (splice when the addon is built, else Node streams), as it says.
  const relay = forwarder.match[2]!;
  try {
    // Memory first, on fresh forwarders: RSS and descriptors per idle relay (a relay that carried bytes, then idles).
    const idle = 1000;
    const idleCost = async (pid: number, port: number): Promise<{ kb: number; fds: number }> => {
      const warm = await openMany(50, echo, port);
      closeAll(warm);
      const rss0 = rssKb(pid);
      const fd0 = fdCount(pid);
      const idleSockets = await openMany(idle, echo, port);
      await latency(idleSockets.slice(0, 10), 'serial');
      const rss1 = rssKb(pid);
      const fd1 = fdCount(pid);
      closeAll(idleSockets);
      return { kb: (rss1 - rss0) / idle, fds: (fd1 - fd0) / idle };
    };
    const idleNative = await idleCost(forwarder.child.pid!, fwd);
    const idleJs = await idleCost(forwarderJs.child.pid!, fwdJs);
    const memoryPerIdleConnectionKb = idleNative.kb;

    const levels: Record<string, unknown>[] = [];
    for (const n of LEVELS) {
      const direct = await openMany(n, echo);
      const via = await openMany(n, echo, fwd);
      const row: Record<string, number> = { connections: n };
      for (const mode of ['serial', 'allInFlight'] as const) {
        // Best of RUNS (interleaved direct, via): a run that another process's burst landed on says nothing about the forwarder.
        let d = await latency(direct, mode);
        let v = await latency(via, mode);
        for (let r = 1; r < RUNS; r++) {
          const dr = await latency(direct, mode);
          const vr = await latency(via, mode);
          if (dr.p99 < d.p99) d = dr;
          if (vr.p99 < v.p99) v = vr;
        }
        Object.assign(row, {
          [`${mode}DirectP50Ms`]: d.p50,
          [`${mode}DirectP99Ms`]: d.p99,
          [`${mode}ViaP50Ms`]: v.p50,
          [`${mode}ViaP99Ms`]: v.p99,
          [`${mode}AddedP50Ms`]: v.p50 - d.p50,
          [`${mode}AddedP99Ms`]: v.p99 - d.p99,
        });
      }
      levels.push(row);
      closeAll(direct);
      closeAll(via);
    }

    let directSeconds = Infinity;
    let viaSeconds = Infinity;
    let viaJsSeconds = Infinity;
    const cpu0 = cpuMs(forwarder.child.pid!);
    // CPU per process and mode, summed over the runs (client = this process, sink = the upstream process).
    const cpu: Record<'direct' | 'via' | 'viaJs', { client: number; sink: number; forwarder: number }> = {
      direct: { client: 0, sink: 0, forwarder: 0 },
      via: { client: 0, sink: 0, forwarder: 0 },
      viaJs: { client: 0, sink: 0, forwarder: 0 },
    };
    const timed = async (mode: keyof typeof cpu, port?: number, fwdPid?: number): Promise<number> => {
      const c0 = runMs(process.pid);
      const s0 = runMs(upstream.child.pid!);
      const f0 = fwdPid ? runMs(fwdPid) : 0;
      const seconds = await transfer(sink, TRANSFER_MB, port);
      cpu[mode].client += runMs(process.pid) - c0;
      cpu[mode].sink += runMs(upstream.child.pid!) - s0;
      cpu[mode].forwarder += fwdPid ? runMs(fwdPid) - f0 : 0;
      return seconds;
    };
    const load = loadavg()[0]!;
    // Each round's own ratio too: a best-of over ~50 ms transfers on 2 shared cores swings (0.72-0.89 across runs).
    const roundRatios: number[] = [];
    for (let i = 0; i < RUNS + 2; i++) {
      const d = await timed('direct');
      const v = await timed('via', fwd, forwarder.child.pid!);
      roundRatios.push(d / v);
      directSeconds = Math.min(directSeconds, d);
      viaSeconds = Math.min(viaSeconds, v);
      viaJsSeconds = Math.min(viaJsSeconds, await timed('viaJs', fwdJs, forwarderJs.child.pid!));
    }
    // What relaying costs the forwarder itself, independent of how the shared cores were scheduled.
    const forwarderCpuMsPer100MB = ((cpuMs(forwarder.child.pid!) - cpu0) / (RUNS + 2)) * (100 / TRANSFER_MB);
    const per100 = (ms: number): number => (ms / (RUNS + 2)) * (100 / TRANSFER_MB);
    const cpuMsPer100MB = Object.fromEntries(
      Object.entries(cpu).map(([mode, c]) => [mode, { client: per100(c.client), sink: per100(c.sink), forwarder: per100(c.forwarder) }]),
    ) as typeof cpu;
    roundRatios.sort((a, b) => a - b);
    const throughputRatioMedian = roundRatios[Math.floor(roundRatios.length / 2)]!;
    const directMBps = TRANSFER_MB / directSeconds;
    const viaMBps = TRANSFER_MB / viaSeconds;
    const viaJsMBps = TRANSFER_MB / viaJsSeconds;
    const at1000 = levels.find((l) => l.connections === 1000) as Record<string, number> | undefined;

    console.log('\nbench/forwarder (keygate forward, TCP listen mode, own process; upstream in a third process)');
    console.log('conns  mode          direct p50/p99 ms   via p50/p99 ms   added p50/p99 ms');
    for (const l of levels as Array<Record<string, number>>) {
      for (const mode of ['serial', 'allInFlight']) {
        const f = (k: string): string => l[`${mode}${k}`]!.toFixed(3);
        console.log(`${String(l.connections).padStart(5)}  ${mode.padEnd(12)}  ${f('DirectP50Ms')}/${f('DirectP99Ms')}`.padEnd(40) + `${f('ViaP50Ms')}/${f('ViaP99Ms')}`.padEnd(17) + `${f('AddedP50Ms')}/${f('AddedP99Ms')}`);
      }
    }
    const cores = availableParallelism();
    console.log(`throughput (${TRANSFER_MB} MB, best of ${RUNS + 2}, ${cores} cores, load ${load.toFixed(1)}; direct = 2 processes, via = 3): direct ${directMBps.toFixed(0)} MB/s, via forwarder (${relay} relay) ${viaMBps.toFixed(0)} MB/s, ratio ${(viaMBps / directMBps).toFixed(3)} (goal ≥ 0.8); via --relay js ${viaJsMBps.toFixed(0)} MB/s, ratio ${(viaJsMBps / directMBps).toFixed(3)}`);
    console.log(`throughput ratio per interleaved round (via ÷ direct): median ${throughputRatioMedian.toFixed(3)}, min ${roundRatios[0]!.toFixed(3)}, max ${roundRatios[roundRatios.length - 1]!.toFixed(3)}`);
    for (const [mode, c] of Object.entries(cpuMsPer100MB)) console.log(`  CPU ms per 100 MB, ${mode.padEnd(6)}: client ${c.client.toFixed(1)}, sink ${c.sink.toFixed(1)}, forwarder ${c.forwarder.toFixed(1)}`);
    console.log(`forwarder CPU per 100 MB relayed: ${forwarderCpuMsPer100MB.toFixed(0)} ms`);
    console.log(`forwarder memory per idle connection: ${memoryPerIdleConnectionKb.toFixed(1)} KB RSS, ${idleNative.fds.toFixed(2)} descriptors (${relay} relay); --relay js: ${idleJs.kb.toFixed(1)} KB, ${idleJs.fds.toFixed(2)} descriptors (over ${idle} idle relays)`);
    const result = {
      addedP99MsAt1000: at1000?.serialAddedP99Ms,
      addedP50MsAt1000: at1000?.serialAddedP50Ms,
      addedP99MsAt1000AllInFlight: at1000?.allInFlightAddedP99Ms,
      throughputRatio: viaMBps / directMBps,
      throughputRatioMedianOfRounds: throughputRatioMedian,
      throughputRatiosByRound: roundRatios,
      directMBps,
      viaMBps,
      relay,
      throughputRatioJs: viaJsMBps / directMBps,
      viaJsMBps,
      forwarderCpuMsPer100MB,
      cpuMsPer100MB,
      cores,
      processes: { direct: 2, via: 3 },
      loadAverage1m: load,
      transferMB: TRANSFER_MB,
      memoryPerIdleConnectionKb,
      descriptorsPerIdleConnection: idleNative.fds,
      memoryPerIdleConnectionKbJs: idleJs.kb,
      descriptorsPerIdleConnectionJs: idleJs.fds,
      levels,
    };
    console.log(`wrote ${writeResults('forwarder', result)}`);
    return result;
  } finally {
    forwarder.child.kill('SIGTERM');
    forwarderJs.child.kill('SIGTERM');
    upstream.child.kill('SIGTERM');
  }
}
