import { randomBytes, randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import {
  ConditionalCheckFailedException,
  GetItemCommand,
  PutItemCommand,
  TransactWriteItemsCommand,
  UpdateItemCommand,
  type DynamoDBClient,
  type TransactWriteItem,
} from '@aws-sdk/client-dynamodb';
import { silentLogger, type Logger } from '../log.js';
import { AuditUnavailableError } from './sink.js';
import { RefusalSampler, type RefusalSettings } from './refusals.js';
import type { AdminRecord, AuditSink, DecisionRecord } from './sink.js';
import { CHAIN_ID, chainBatch, chainGenesis, type AuditSigner, type ChainHead } from './chain.js';
import { AUDIT_PK, HEAD_ATTRIBUTES, headKey, LINE_ATTRIBUTE, recordKey } from './dynamodb-layout.js';
import { auditClient, parseHeadItem, type DynamoDbAuditSettings } from './dynamodb-chains.js';

/** DynamoDB's limit of items in one TransactWriteItems. */
export const MAX_TRANSACTION_ITEMS = 100;

export interface DynamoDbAuditSinkOptions {
  readonly log?: Logger;
  /** Delay between recovery attempts after a failed write. Default 1000 ms. */
  readonly retryMs?: number;
  readonly refusals?: Partial<RefusalSettings>;
  readonly clock?: () => number;
  /** The DynamoDB client (tests wrap one to count or fail calls). Default: one built from the settings. */
  readonly client?: DynamoDBClient;
}

interface Queued {
  readonly body: Record<string, unknown>;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

const errorName = (err: unknown): string => (err as { name?: string }).name || 'Error';
const isConditionFailure = (err: unknown): boolean => err instanceof ConditionalCheckFailedException || errorName(err) === 'ConditionalCheckFailedException';

/** A fresh, readable chain id: host, start time, randomness (CHAIN_ID). */
export function newChainId(now: number = Date.now()): string {
  const host = hostname().replace(/[^A-Za-z0-9.-]/g, '-').slice(0, 30) || 'broker';
  const time = new Date(now).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${host}-${time}-${randomBytes(4).toString('hex')}`;
}

/**
 * The audit chain of one replica in a DynamoDB table (layout in
 * dynamodb-layout.ts). Like the file log (log.ts), appends made while a write
 * is in flight (or in the same tick) join one batch: chainBatch's lines,
 * seal included, go into ONE TransactWriteItems with a Put per record
 * (attribute_not_exists) and an Update of the chain head conditioned on the
 * head still being where this process left it (`seq = :expected AND owner =
 * :me`). `append` resolves only once that transaction succeeded, so a release
 * is acknowledged only when its record is durable in DynamoDB. A queue larger
 * than one transaction is split into consecutive sealed transactions.
 *
 * Failure: the batch and everything queued are rejected (AUDIT_UNAVAILABLE,
 * nothing acknowledged), the sink turns unhealthy, and a recovery reads the
 * head (consistently) and decides:
 * - head unchanged, still ours: the transaction did not apply; healthy again.
 * - head exactly where a failed batch would have put it, still ours: the
 *   transaction applied but its answer was lost (a timeout, a dropped
 *   connection). Its records are durable although their clients were told
 *   failure: the audit then holds a decision nobody received, never the
 *   reverse, so that is a safe (denial-side) error; the chain continues from
 *   the true head.
 * - owner changed: another process took this chain over (same replicaId).
 *   It stops for good (like AuditLog.abandon): never writes again.
 * - anything else (the head moved where no batch of ours put it): stops for good.
 * A conditional failure is classified at once; other failures (throttling past
 * the SDK's retries, the deadline, network, AccessDenied) after retryMs.
 * Before turning healthy again, the recovery proves that writes work: a
 * transaction with one conditional no-op on the head (`seq` and `prevHash`
 * where this process has it, owner still this process; it sets `checked`).
 * A read alone would flip to healthy while writes are still refused (an IAM
 * policy denying writes only), and readiness with it.
 */
export class DynamoDbAuditSink implements AuditSink {
  readonly #settings: DynamoDbAuditSettings;
  readonly #ddb: DynamoDBClient;
  /** False when the client was given (its owner destroys it). */
  readonly #ownsClient: boolean;
  readonly #signer: AuditSigner;
  readonly #log: Logger;
  readonly #retryMs: number;
  readonly #refusals: RefusalSampler;
  readonly #chainId: string;
  readonly #owner: string;
  readonly #bodiesPerBatch: number;
  readonly #clock: () => number;
  #head: ChainHead;
  /** Heads that failed batches (based on the current head) would have made: one of them may have applied. */
  #inDoubt: ChainHead[] = [];
  /** The last failed transaction found a record already at a seq it wrote (not only a moved head). */
  #recordTaken = false;
  #queue: Queued[] = [];
  #flushing: Promise<void> | undefined;
  #failed: unknown;
  #retryTimer: NodeJS.Timeout | undefined;
  #recovering: Promise<void> | undefined;
  #closed = false;

  private constructor(settings: DynamoDbAuditSettings, ddb: DynamoDBClient, signer: AuditSigner, options: DynamoDbAuditSinkOptions, state: { chainId: string; owner: string; head: ChainHead }) {
    this.#settings = settings;
    this.#ddb = ddb;
    this.#ownsClient = !options.client;
    this.#signer = signer;
    this.#log = options.log ?? silentLogger;
    this.#retryMs = options.retryMs ?? 1000;
    this.#chainId = state.chainId;
    this.#owner = state.owner;
    this.#head = state.head;
    this.#clock = options.clock ?? Date.now;
    // Items per transaction: the records of the batch, its seal, and the head update.
    this.#bodiesPerBatch = Math.min(settings.maxBatchItems ?? MAX_TRANSACTION_ITEMS, MAX_TRANSACTION_ITEMS) - 2;
    if (this.#bodiesPerBatch < 1) throw new RangeError('audit maxBatchItems must be at least 3 (a record, the seal, the chain head)');
    this.#refusals = new RefusalSampler(options.refusals ?? {}, options.clock ?? Date.now, (summary) => this.#enqueue({ type: 'summary', ...summary }));
  }

  /**
   * Starts this replica's chain: with no replicaId, a new chain (a fresh id,
   * its head created with attribute_not_exists); with a replicaId, the chain
   * is taken over: its owner is set to this process's token (conditional on
   * the owner read) and writing continues from the head as that update left
   * it. A process still writing that chain then fails its next transaction
   * (owner condition) and stops.
   */
  static async open(settings: DynamoDbAuditSettings, signer: AuditSigner, options: DynamoDbAuditSinkOptions = {}): Promise<DynamoDbAuditSink> {
    const ddb = options.client ?? auditClient(settings);
    const owner = randomUUID();
    const chainId = settings.replicaId ?? newChainId(options.clock?.());
    if (!CHAIN_ID.test(chainId)) throw new AuditUnavailableError(`audit replicaId ${JSON.stringify(chainId)} is not a chain id (1-64 of A-Z a-z 0-9 . _ -)`);
    const deadline = (): { abortSignal: AbortSignal } => ({ abortSignal: AbortSignal.timeout(settings.requestTimeoutMs ?? 5_000) });
    const table = settings.table;
    const call = async <T>(op: string, send: () => Promise<T>): Promise<T> => {
      try {
        return await send();
      } catch (err) {
        if (isConditionFailure(err)) throw err;
        throw new AuditUnavailableError(`audit table ${table}: ${op} of chain ${chainId} failed (${errorName(err)})`, { cause: err, storeError: errorName(err) });
      }
    };
    const started = new Date(options.clock?.() ?? Date.now()).toISOString();
    try {
      // A few rounds: another process may create or take the chain between the read and the write.
      for (let round = 0; round < 8; round++) {
        const got = await call('GetItem', () => ddb.send(new GetItemCommand({ TableName: table, Key: { pk: { S: headKey(chainId).pk }, sk: { S: headKey(chainId).sk } }, ConsistentRead: true }), deadline()));
        try {
          if (!got.Item) {
            const head = { seq: 0, prevHash: chainGenesis(chainId) };
            await call('PutItem', () =>
              ddb.send(
                new PutItemCommand({
                  TableName: table,
                  Item: {
                    pk: { S: headKey(chainId).pk },
                    sk: { S: headKey(chainId).sk },
                    [HEAD_ATTRIBUTES.seq]: { N: '0' },
                    [HEAD_ATTRIBUTES.prevHash]: { S: head.prevHash },
                    [HEAD_ATTRIBUTES.kid]: { S: signer.kid },
                    [HEAD_ATTRIBUTES.owner]: { S: owner },
                    [HEAD_ATTRIBUTES.started]: { S: started },
                  },
                  ConditionExpression: 'attribute_not_exists(#pk)',
                  ExpressionAttributeNames: { '#pk': AUDIT_PK },
                }),
                deadline(),
              ),
            );
            return new DynamoDbAuditSink(settings, ddb, signer, options, { chainId, owner, head });
          }
          const current = parseHeadItem(table, got.Item);
          // Conditioned on the owner read, not the seq: a busy previous owner moves the seq with every batch
          // and would starve the takeover. The write fences it (its next transaction fails on the owner) and
          // returns the head as of that instant, atomically: the position this process continues from.
          const taken = await call('UpdateItem', () =>
            ddb.send(
              new UpdateItemCommand({
                TableName: table,
                Key: { pk: { S: headKey(chainId).pk }, sk: { S: headKey(chainId).sk } },
                UpdateExpression: 'SET #owner = :me, #kid = :kid, #started = :started',
                ConditionExpression: '#owner = :previous',
                ExpressionAttributeNames: { '#owner': HEAD_ATTRIBUTES.owner, '#kid': HEAD_ATTRIBUTES.kid, '#started': HEAD_ATTRIBUTES.started },
                ExpressionAttributeValues: { ':me': { S: owner }, ':kid': { S: signer.kid }, ':started': { S: started }, ':previous': { S: current.owner } },
                ReturnValues: 'ALL_NEW',
              }),
              deadline(),
            ),
          );
          if (!taken.Attributes) throw new AuditUnavailableError(`audit table ${table}: taking chain ${chainId} over returned no head`, { storeError: 'Malformed' });
          return new DynamoDbAuditSink(settings, ddb, signer, options, { chainId, owner, head: parseHeadItem(table, taken.Attributes).head });
        } catch (err) {
          if (!isConditionFailure(err)) throw err;
          // Created or advanced meanwhile: read again.
        }
      }
      throw new AuditUnavailableError(`audit table ${table}: chain ${chainId} kept moving; could not take it over`, { storeError: 'Contention' });
    } catch (err) {
      if (!options.client) ddb.destroy();
      if (err instanceof AuditUnavailableError) throw err;
      throw new AuditUnavailableError(`audit table ${table}: cannot start chain ${chainId} (${(err as Error).message})`, { cause: err, storeError: errorName(err) });
    }
  }

  /** This replica's chain id. */
  get chainId(): string {
    return this.#chainId;
  }

  get table(): string {
    return this.#settings.table;
  }

  /** The last durable line's position. */
  get head(): ChainHead {
    return this.#head;
  }

  get healthy(): boolean {
    return this.#failed === undefined && !this.#closed;
  }

  /**
   * Readiness: a consistent read of this chain's head, the chain still this
   * process's. Throws AUDIT_UNAVAILABLE when the table cannot be read, when
   * the sink is failed or closed; a chain taken over (or its head gone) is
   * abandoned here as in recovery. Cheap: one GetItem (the broker caches it).
   */
  async check(): Promise<void> {
    if (this.#closed || this.#failed !== undefined) throw new AuditUnavailableError(`audit chain ${this.#chainId} is ${this.#closed ? 'closed' : 'unavailable after a failed write'}`, { storeError: this.#closed ? 'Closed' : errorName(this.#failed) });
    let owner: string;
    try {
      const hk = headKey(this.#chainId);
      const got = await this.#ddb.send(new GetItemCommand({ TableName: this.#settings.table, Key: { pk: { S: hk.pk }, sk: { S: hk.sk } }, ConsistentRead: true }), this.#deadline());
      if (!got.Item) {
        this.abandon('the chain head item is gone');
        throw new AuditUnavailableError(`audit chain ${this.#chainId}: its head item is gone`, { storeError: 'Abandoned' });
      }
      owner = parseHeadItem(this.#settings.table, got.Item).owner;
    } catch (err) {
      if (err instanceof AuditUnavailableError) throw err;
      if ((err as { code?: string }).code === 'AUDIT_CHAIN_MALFORMED') this.abandon('the chain head item is malformed');
      throw new AuditUnavailableError(`audit table ${this.#settings.table}: reading the head of chain ${this.#chainId} failed (${errorName(err)})`, { cause: err, storeError: errorName(err) });
    }
    if (owner !== this.#owner) {
      this.abandon(`chain ${this.#chainId} was taken over by another process`);
      throw new AuditUnavailableError(`audit chain ${this.#chainId} was taken over by another process`, { storeError: 'Abandoned' });
    }
  }

  append(record: DecisionRecord): Promise<void> {
    return this.#enqueue({ type: 'decision', ...record });
  }

  /** Appends an admin API action (never a value); resolves once it is durable. */
  appendAdmin(record: AdminRecord): Promise<void> {
    return this.#enqueue({ type: 'admin', ...record });
  }

  appendRefusal(record: DecisionRecord): Promise<void> {
    return this.#refusals.take(record) ? this.append(record) : Promise.resolve();
  }

  #enqueue(body: Record<string, unknown>): Promise<void> {
    if (this.#closed) return Promise.reject(new AuditUnavailableError('audit chain is closed', { storeError: 'Closed' }));
    if (this.#failed !== undefined) {
      return Promise.reject(new AuditUnavailableError('audit chain is unavailable after a failed write', { cause: this.#failed, storeError: errorName(this.#failed) }));
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ body, resolve, reject });
      this.#flushing ??= this.#flushLoop();
    });
  }

  async #flushLoop(): Promise<void> {
    // Yield once so appends made in the same tick join this batch.
    await new Promise<void>((r) => setImmediate(r));
    while (this.#queue.length && this.#failed === undefined) {
      const batch = this.#queue.splice(0, this.#bodiesPerBatch);
      const next = chainBatch(this.#head, batch.map((q) => q.body), this.#signer);
      try {
        await this.#transact(next.lines, next.head);
      } catch (err) {
        this.#fail(err, batch, next.head);
        break;
      }
      this.#head = next.head;
      this.#inDoubt = [];
      for (const w of batch) w.resolve();
    }
    this.#flushing = undefined;
  }

  /** One transaction: a Put per line (never overwriting) and the head moved from where this process left it. */
  async #transact(lines: readonly string[], to: ChainHead): Promise<void> {
    const TableName = this.#settings.table;
    const items: TransactWriteItem[] = lines.map((line, i) => {
      const key = recordKey(this.#chainId, this.#head.seq + i + 1);
      return {
        Put: {
          TableName,
          Item: { pk: { S: key.pk }, sk: { S: key.sk }, [LINE_ATTRIBUTE]: { S: line } },
          ConditionExpression: 'attribute_not_exists(#pk)',
          ExpressionAttributeNames: { '#pk': AUDIT_PK },
        },
      };
    });
    const hk = headKey(this.#chainId);
    items.push({
      Update: {
        TableName,
        Key: { pk: { S: hk.pk }, sk: { S: hk.sk } },
        UpdateExpression: 'SET #seq = :seq, #prevHash = :prevHash',
        ConditionExpression: '#seq = :expected AND #owner = :me',
        ExpressionAttributeNames: { '#seq': HEAD_ATTRIBUTES.seq, '#prevHash': HEAD_ATTRIBUTES.prevHash, '#owner': HEAD_ATTRIBUTES.owner },
        ExpressionAttributeValues: { ':seq': { N: String(to.seq) }, ':prevHash': { S: to.prevHash }, ':expected': { N: String(this.#head.seq) }, ':me': { S: this.#owner } },
      },
    });
    // The token makes an SDK retry of a transaction that did apply succeed instead of failing its condition.
    await this.#ddb.send(new TransactWriteItemsCommand({ TransactItems: items, ClientRequestToken: randomUUID() }), this.#deadline());
  }

  /** One transaction that changes nothing of the chain: proves writes work and the head is where this process has it. */
  async #probeWrite(): Promise<void> {
    const hk = headKey(this.#chainId);
    const now = new Date(this.#clock()).toISOString();
    await this.#ddb.send(
      new TransactWriteItemsCommand({
        TransactItems: [
          {
            Update: {
              TableName: this.#settings.table,
              Key: { pk: { S: hk.pk }, sk: { S: hk.sk } },
              UpdateExpression: 'SET #checked = :now',
              ConditionExpression: '#seq = :seq AND #prevHash = :prevHash AND #owner = :me',
              ExpressionAttributeNames: { '#checked': HEAD_ATTRIBUTES.checked, '#seq': HEAD_ATTRIBUTES.seq, '#prevHash': HEAD_ATTRIBUTES.prevHash, '#owner': HEAD_ATTRIBUTES.owner },
              ExpressionAttributeValues: { ':now': { S: now }, ':seq': { N: String(this.#head.seq) }, ':prevHash': { S: this.#head.prevHash }, ':me': { S: this.#owner } },
            },
          },
        ],
        ClientRequestToken: randomUUID(),
      }),
      this.#deadline(),
    );
  }

  #deadline(): { abortSignal: AbortSignal } {
    return { abortSignal: AbortSignal.timeout(this.#settings.requestTimeoutMs ?? 5_000) };
  }

  #fail(err: unknown, batch: Queued[], wouldBe: ChainHead): void {
    const first = this.#failed === undefined;
    this.#failed = err;
    this.#inDoubt.push(wouldBe);
    this.#recordTaken = recordConditionFailed(err);
    const name = conditionFailed(err) ? 'ConditionalCheckFailed' : errorName(err);
    const error = new AuditUnavailableError(`audit chain ${this.#chainId}: write failed (${name}); nothing was acknowledged`, { cause: err, storeError: name });
    for (const w of [...batch, ...this.#queue]) w.reject(error);
    this.#queue = [];
    if (first && name !== 'ConditionalCheckFailed') {
      this.#log('error', 'audit chain write failed: releases stop until it recovers', { table: this.#settings.table, chain: this.#chainId, durableSeq: this.#head.seq, cause: name });
    }
    this.#scheduleRecovery(name === 'ConditionalCheckFailed' ? 0 : this.#retryMs);
  }

  #scheduleRecovery(delay: number): void {
    if (this.#closed || this.#retryTimer) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#recovering = this.#recover().finally(() => (this.#recovering = undefined));
    }, delay);
    this.#retryTimer.unref();
  }

  /** Reads the head and decides what the failed transaction did (see the class comment). */
  async #recover(): Promise<void> {
    let current;
    try {
      const hk = headKey(this.#chainId);
      const got = await this.#ddb.send(new GetItemCommand({ TableName: this.#settings.table, Key: { pk: { S: hk.pk }, sk: { S: hk.sk } }, ConsistentRead: true }), this.#deadline());
      if (!got.Item) {
        this.abandon('the chain head item is gone');
        return;
      }
      current = parseHeadItem(this.#settings.table, got.Item);
    } catch (err) {
      if ((err as { code?: string }).code === 'AUDIT_CHAIN_MALFORMED') {
        this.abandon('the chain head item is malformed');
        return;
      }
      this.#failed = err;
      this.#scheduleRecovery(this.#retryMs);
      return;
    }
    if (this.#closed) return;
    if (current.owner !== this.#owner) {
      this.abandon(`chain ${this.#chainId} was taken over by another process`);
      return;
    }
    const same = (h: ChainHead): boolean => h.seq === current.head.seq && h.prevHash === current.head.prevHash;
    if (same(this.#head)) {
      if (this.#recordTaken) {
        // The head is where this process left it, yet a record after it exists: written outside the broker.
        // Writing on would fail forever (and overwriting is never done): stop, for an operator to look.
        this.abandon(`chain ${this.#chainId} holds records after its head (seq ${current.head.seq}) that no broker wrote`);
        return;
      }
      // Failed batches stay in doubt: one may still land (a request the deadline gave up on); if it does, the
      // next write fails on the head and the recovery then finds the head where that batch put it.
    } else {
      const applied = this.#inDoubt.find(same);
      if (!applied) {
        this.abandon(`chain ${this.#chainId} head moved to seq ${current.head.seq}, where no write of this process put it`);
        return;
      }
      // The transaction applied although its answer was lost: its records are durable (their clients were
      // told failure: the audit overstates, never understates); continue from the true head.
      this.#log('warn', 'audit chain: a write reported as failed had applied; continuing from the durable head', { table: this.#settings.table, chain: this.#chainId, seq: applied.seq });
      this.#head = applied;
      this.#inDoubt = [];
    }
    // Healthy only once a write succeeds: a conditional no-op on the head, in a transaction like every batch.
    try {
      await this.#probeWrite();
    } catch (err) {
      if (this.#closed) return;
      this.#failed = err;
      // The head moved since the read (a batch in doubt landed): classify again at once; otherwise retry later.
      this.#scheduleRecovery(conditionFailed(err) ? 0 : this.#retryMs);
      return;
    }
    if (this.#closed) return;
    this.#failed = undefined;
    this.#log('info', 'audit chain recovered: writes succeed again', { table: this.#settings.table, chain: this.#chainId, seq: this.#head.seq });
  }

  /**
   * Stops for good without writing again: the chain is no longer this
   * process's (taken over). Queued and future appends are refused, the pending
   * refusal summary is dropped, no recovery runs.
   */
  abandon(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#failed ??= new AuditUnavailableError(reason, { storeError: 'Abandoned' });
    this.#stopRefusals();
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#log('error', 'audit chain abandoned: this broker writes no more records and refuses releases', { table: this.#settings.table, chain: this.#chainId, reason });
    const err = new AuditUnavailableError(`audit chain abandoned: ${reason}`, { storeError: 'Abandoned' });
    for (const w of this.#queue) w.reject(err);
    this.#queue = [];
  }

  /** Stops the refusal summaries; counts that never made it into a record are logged (error), not silently lost. */
  #stopRefusals(): void {
    const lost = this.#refusals.stop();
    if (lost) this.#log('error', 'audit chain: counted refusals were never written (their summary record is lost)', { table: this.#settings.table, chain: this.#chainId, lostRefusals: lost.refusals, since: lost.since });
  }

  /** Writes the pending refusal summary, waits for queued writes, releases the client. */
  async close(): Promise<void> {
    if (!this.#closed) {
      await this.#refusals.flush().catch(() => {});
      this.#stopRefusals();
      this.#closed = true;
    }
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    await this.#recovering;
    await this.#flushing;
    if (this.#ownsClient) this.#ddb.destroy();
  }
}

/** A cancelled transaction one of whose record Puts (every item but the last, the head) found its record present. */
function recordConditionFailed(err: unknown): boolean {
  const reasons = (err as { CancellationReasons?: Array<{ Code?: string }> }).CancellationReasons;
  return errorName(err) === 'TransactionCanceledException' && Array.isArray(reasons) && reasons.slice(0, -1).some((r) => r?.Code === 'ConditionalCheckFailed');
}

/** A cancelled transaction whose cause was a failed condition (the head, or a record already present). */
function conditionFailed(err: unknown): boolean {
  if (isConditionFailure(err)) return true;
  const reasons = (err as { CancellationReasons?: Array<{ Code?: string }> }).CancellationReasons;
  return errorName(err) === 'TransactionCanceledException' && Array.isArray(reasons) && reasons.some((r) => r?.Code === 'ConditionalCheckFailed');
}
