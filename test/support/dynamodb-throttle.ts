/**
 * moto cannot throttle: a loopback endpoint that answers every DynamoDB call as DynamoDB does when throttling
 * (400, ThrottlingException), for the fail-closed tests of the DynamoDB-backed parts.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ThrottlingDynamoDb {
  /** http://127.0.0.1:PORT */
  readonly endpoint: string;
  /** How many calls it has answered (the SDK's retries included). */
  calls(): number;
  close(): Promise<void>;
}

export async function startThrottlingDynamoDb(): Promise<ThrottlingDynamoDb> {
  let calls = 0;
  const server = createServer((req, res) => {
    calls++;
    req.resume();
    req.on('end', () => {
      res.writeHead(400, { 'content-type': 'application/x-amz-json-1.0' });
      res.end(JSON.stringify({ __type: 'com.amazonaws.dynamodb.v20120810#ThrottlingException', message: 'Rate of requests exceeds the allowed throughput.' }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    calls: () => calls,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
