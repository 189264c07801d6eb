/** Herald's TypeScript SDK: the HTTP API, a worker loop, webhook verification for both formats, dedupe. */
export * from "./client.js";
export * from "./errors.js";
export * from "./worker.js";
export * from "./verify.js";
export * from "./dedupe.js";
export type * from "./types.js";
