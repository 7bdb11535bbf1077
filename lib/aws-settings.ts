/**
 * How a shared component (nonce registry, quarantine, shared keys) reaches its
 * DynamoDB table. Types only: every part may import it. Unset values come from
 * the AWS SDK's usual configuration (AWS_REGION, AWS_ENDPOINT_URL, profile,
 * the credential chain).
 */

/** Credentials given in code (tests, embedding); a config file relies on the AWS SDK's credential chain. */
export interface StaticAwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

export interface DynamoDbTableSettings {
  readonly kind: 'dynamodb';
  readonly table: string;
  /** Overrides AWS_REGION / the SDK's region chain. */
  readonly region?: string;
  /** Overrides AWS_ENDPOINT_URL (a VPC endpoint, a local DynamoDB, moto). */
  readonly endpoint?: string;
  /** Only from code, never from a config file. */
  readonly credentials?: StaticAwsCredentials;
  /** SDK attempts per call, throttling retries included. Default 3. */
  readonly maxAttempts?: number;
  /** Deadline of one operation in ms, SDK retries included (each component states its default). */
  readonly requestTimeoutMs?: number;
}
