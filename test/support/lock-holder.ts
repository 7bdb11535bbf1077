/**
 * Child process for the lock tests: takes a lock, says "locked", and holds it
 * until killed.
 *
 *   lock-holder.ts <store>                    the store lock, through the public update path
 *   lock-holder.ts <lock file> <heartbeatMs>  a bare lock file, refreshed every heartbeatMs
 */
import { FileStore } from '../../broker/store/file-store.js';
import { acquireLock } from '../../broker/store/lock.js';

const [target, heartbeat] = process.argv.slice(2);
const hold = (): Promise<never> => new Promise(() => setInterval(() => {}, 60_000)); // hold (and keep the process alive) until SIGKILL
if (heartbeat !== undefined) {
  await acquireLock(target!, { waitMs: 0, heartbeatMs: Number(heartbeat) });
  process.stdout.write('locked\n');
  await hold();
}
const store = await FileStore.open(target!);
await store.update(async () => {
  process.stdout.write('locked\n');
  await hold();
});
