/**
 * Transitional re-export: the durable-file helpers live in lib/durable-fs.ts
 * (a leaf that vsock-shim may import too). Kept only so modules owned by
 * another in-flight change (store/file-store.ts, store/lock.ts, audit/log.ts,
 * broker.ts) keep compiling; switch their imports and delete this file.
 */
export * from '../../lib/durable-fs.js';
