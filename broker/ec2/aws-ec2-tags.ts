import { DescribeTagsCommand, EC2Client } from '@aws-sdk/client-ec2';
import { InstanceTagsUnavailableError, type Ec2Settings, type InstanceTagLookup } from './instance-tags.js';
import type { InstanceTags } from '../policy/decide.js';

/** Pages of DescribeTags read for one instance at most (EC2 allows 50 tags per resource: one page holds them). */
const MAX_PAGES = 5;

/** Instance tags from EC2 DescribeTags (IAM: ec2:DescribeTags), filtered to one instance id. */
export class AwsEc2TagLookup implements InstanceTagLookup {
  readonly #client: EC2Client;
  readonly #timeoutMs: number;

  constructor(settings: Ec2Settings) {
    this.#client = new EC2Client({
      ...(settings.region ? { region: settings.region } : {}),
      ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
      ...(settings.credentials ? { credentials: settings.credentials } : {}),
      maxAttempts: settings.maxAttempts ?? 2,
    });
    this.#timeoutMs = settings.requestTimeoutMs ?? 3_000;
  }

  async tagsOf(instanceId: string): Promise<InstanceTags> {
    // One deadline for the whole lookup, SDK retries and pages included: a release must not hang on EC2.
    const abortSignal = AbortSignal.timeout(this.#timeoutMs);
    const tags = new Map<string, string>();
    let token: string | undefined;
    try {
      for (let page = 0; page < MAX_PAGES; page++) {
        const out = await this.#client.send(
          new DescribeTagsCommand({
            Filters: [
              { Name: 'resource-type', Values: ['instance'] },
              { Name: 'resource-id', Values: [instanceId] },
            ],
            MaxResults: 1000,
            ...(token ? { NextToken: token } : {}),
          }),
          { abortSignal },
        );
        for (const t of out.Tags ?? []) {
          // Filtered server-side; checked again here so a wrong answer cannot lend another resource's tags.
          if (t.ResourceId === instanceId && t.Key !== undefined) tags.set(t.Key, t.Value ?? '');
        }
        token = out.NextToken;
        if (!token) return tags;
      }
    } catch (err) {
      // Past the deadline the SDK says AbortError; the audit says why it aborted (TimeoutError).
      throw unavailable(abortSignal.aborted ? abortSignal.reason : err, `EC2 DescribeTags for ${instanceId}`);
    }
    throw new InstanceTagsUnavailableError(`EC2 DescribeTags for ${instanceId}: more than ${MAX_PAGES} pages`, 'TooManyPages');
  }

  async check(): Promise<void> {
    const abortSignal = AbortSignal.timeout(this.#timeoutMs);
    try {
      await this.#client.send(new DescribeTagsCommand({ Filters: [{ Name: 'resource-type', Values: ['instance'] }], MaxResults: 5 }), { abortSignal });
    } catch (err) {
      throw unavailable(abortSignal.aborted ? abortSignal.reason : err, 'EC2 DescribeTags');
    }
  }

  close(): void {
    this.#client.destroy();
  }
}

/** The error name the audit keeps: EC2's error code, or the transport's (ECONNREFUSED, TimeoutError). */
function unavailable(err: unknown, what: string): InstanceTagsUnavailableError {
  const e = err as { name?: string; code?: string; cause?: { code?: string } };
  const name = (e.name && e.name !== 'Error' ? e.name : undefined) ?? e.code ?? e.cause?.code ?? 'Error';
  const safe = /^[A-Za-z0-9_.-]{1,64}$/.test(name) ? name : 'Error';
  return new InstanceTagsUnavailableError(`${what} failed: ${safe}`, safe, { cause: err });
}
