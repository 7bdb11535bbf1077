/**
 * Child process for the store-lock tests: takes the store lock through the
 * public update path, says "locked", and holds it until killed.
 */
import { FileStore } from '../../broker/store/file-store.js';

const store = await FileStore.open(process.argv[2]!);
await store.update(async () => {
  process.stdout.write('locked\n');
  await new Promise(() => setInterval(() => {}, 60_000)); // hold (and keep the process alive) until SIGKILL
});
