import { CodedError } from '../../lib/coded-error.js';
import type { StaticAwsCredentials } from '../../lib/aws-settings.js';
import type { InstanceTags } from '../policy/decide.js';

/** Where the tags of an EC2 instance come from (EC2's DescribeTags; a stand-in in tests). */
export interface InstanceTagLookup {
  /** Every tag of `instanceId` (none: an empty map, also for an instance EC2 does not know). */
  tagsOf(instanceId: string): Promise<InstanceTags>;
  /** One cheap call that proves EC2 answers (readiness). */
  check(): Promise<void>;
  close(): void;
}

/** EC2 could not be asked (unreachable, throttled past the deadline, access denied): whether an instance carries a tag is unknown. */
export class InstanceTagsUnavailableError extends CodedError<'INSTANCE_TAGS_UNAVAILABLE'> {
  override readonly name = 'InstanceTagsUnavailableError';
  constructor(
    message: string,
    /** EC2's (or the SDK's) error name, for the audit record. */
    readonly ec2Error: string,
    options?: { cause?: unknown },
  ) {
    super('INSTANCE_TAGS_UNAVAILABLE', message, options);
  }
}

export interface TagCacheOptions {
  /** How long a looked-up answer is used: a tag removed in EC2 stops releases within this time. */
  readonly ttlMs: number;
  /** Instances remembered at most; the oldest answer is dropped first. */
  readonly maxEntries: number;
  /** Monotonic milliseconds (a wall clock stepped back must not stretch an answer's life). */
  readonly clock?: () => number;
}

/**
 * Instance tags, cached per instance for `ttlMs`, with one lookup in flight per instance (concurrent
 * requests share it) and at most `maxEntries` instances remembered. Failures are not cached: the next
 * request asks again (and is refused again while EC2 stays unreachable).
 */
export class CachedInstanceTags {
  readonly #lookup: InstanceTagLookup;
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #clock: () => number;
  readonly #answers = new Map<string, { readonly tags: InstanceTags; readonly until: number }>();
  readonly #inFlight = new Map<string, { readonly asked: number; readonly answer: Promise<InstanceTags> }>();

  constructor(lookup: InstanceTagLookup, options: TagCacheOptions) {
    this.#lookup = lookup;
    this.#ttlMs = options.ttlMs;
    this.#maxEntries = options.maxEntries;
    this.#clock = options.clock ?? (() => performance.now());
  }

  /** Instances whose answer is remembered (tests: the bound). */
  get size(): number {
    return this.#answers.size;
  }

  /** @throws InstanceTagsUnavailableError when EC2 cannot be asked */
  tagsOf(instanceId: string): Promise<InstanceTags> {
    const now = this.#clock();
    const cached = this.#answers.get(instanceId);
    if (cached && now < cached.until) return Promise.resolve(cached.tags);
    if (cached) this.#answers.delete(instanceId);
    // A question asked ttlMs ago or more is not joined: its answer may predate a tag removal by more than
    // the TTL promises (EC2 slow to answer, a short TTL). Ask again; the old question's waiters keep theirs.
    const pending = this.#inFlight.get(instanceId);
    if (pending && now < pending.asked + this.#ttlMs) return pending.answer;
    // The answer's life starts when the question is asked: a tag removed after that is seen within ttlMs.
    const entry = {
      asked: now,
      answer: this.#lookup.tagsOf(instanceId).then((tags) => {
        this.#remember(instanceId, tags, now + this.#ttlMs);
        return tags;
      }).finally(() => {
        if (this.#inFlight.get(instanceId) === entry) this.#inFlight.delete(instanceId);
      }),
    };
    this.#inFlight.set(instanceId, entry);
    return entry.answer;
  }

  #remember(instanceId: string, tags: InstanceTags, until: number): void {
    // An older question answered last does not replace a newer answer.
    if ((this.#answers.get(instanceId)?.until ?? -Infinity) >= until) return;
    this.#answers.delete(instanceId);
    while (this.#answers.size >= this.#maxEntries) this.#answers.delete(this.#answers.keys().next().value as string);
    this.#answers.set(instanceId, { tags, until });
  }

  check(): Promise<void> {
    return this.#lookup.check();
  }

  close(): void {
    this.#answers.clear();
    this.#lookup.close();
  }
}

/** The `ec2` config setting: how instance tags are looked up (for bindings with `instances.ec2Tag`). */
export interface Ec2Settings {
  /** How long an instance's tags are reused; a removed tag stops releases within this time. Default 30. */
  readonly tagCacheSeconds?: number;
  /** Instances whose tags are remembered at most. Default 10 000. */
  readonly maxCachedInstances?: number;
  /** Overrides AWS_REGION / the SDK's region chain. */
  readonly region?: string;
  /** Overrides AWS_ENDPOINT_URL (a VPC endpoint, moto). */
  readonly endpoint?: string;
  /** Only from code, never from a config file. */
  readonly credentials?: StaticAwsCredentials;
  /** SDK attempts per call, throttling retries included. Default 2. */
  readonly maxAttempts?: number;
  /** Deadline of one lookup in ms, SDK retries included. Default 3 000. */
  readonly requestTimeoutMs?: number;
}

export const DEFAULT_TAG_CACHE_SECONDS = 30;
export const DEFAULT_MAX_CACHED_INSTANCES = 10_000;

/**
 * Instance tags for the broker: the SDK (@aws-sdk/client-ec2) is loaded on the first lookup or check,
 * so a broker none of whose bindings uses `ec2Tag` never loads it.
 */
export function openInstanceTags(settings: Ec2Settings = {}, clock?: () => number): CachedInstanceTags {
  let client: Promise<InstanceTagLookup> | undefined;
  let closed = false;
  const load = (): Promise<InstanceTagLookup> => {
    client ??= import('./aws-ec2-tags.js').then(({ AwsEc2TagLookup }) => new AwsEc2TagLookup(settings));
    return client;
  };
  const lazy: InstanceTagLookup = {
    tagsOf: async (instanceId) => (await load()).tagsOf(instanceId),
    check: async () => (await load()).check(),
    close: () => {
      if (closed) return;
      closed = true;
      void client?.then((c) => c.close(), () => undefined);
    },
  };
  return new CachedInstanceTags(lazy, {
    ttlMs: (settings.tagCacheSeconds ?? DEFAULT_TAG_CACHE_SECONDS) * 1000,
    maxEntries: settings.maxCachedInstances ?? DEFAULT_MAX_CACHED_INSTANCES,
    ...(clock ? { clock } : {}),
  });
}
