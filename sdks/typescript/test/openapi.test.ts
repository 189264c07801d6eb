// The SDK's wire types (src/types.ts) are generated from /openapi.json; this fails when the
// committed types and the document a running Herald serves disagree (a field added, renamed or
// made required, an enum changed). Fix: npm run gen-types -- URL > src/types.ts
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { PACKAGE, startHerald, type Server } from "./helpers.js";

let server: Server;
before(async () => {
  server = await startHerald();
});
after(() => server.stop());

interface OpenApi {
  paths: Record<string, Record<string, unknown>>;
  components: { schemas: Record<string, unknown> };
}

async function document(): Promise<OpenApi> {
  const answer = await fetch(server.url + "/openapi.json");
  assert.equal(answer.status, 200);
  return (await answer.json()) as OpenApi;
}

test("the types are what the served document generates", async () => {
  const generator = (await import(pathToFileURL(join(PACKAGE, "scripts", "gen-types.mjs")).href)) as { generate(d: unknown): string };
  const expected = generator.generate(await document());
  const committed = readFileSync(join(PACKAGE, "src", "types.ts"), "utf8");
  assert.equal(committed, expected, "the SDK's types and /openapi.json disagree: regenerate src/types.ts");
});

test("the generator reads required fields, enums and nullability", async () => {
  const generator = (await import(pathToFileURL(join(PACKAGE, "scripts", "gen-types.mjs")).href)) as { generate(d: unknown): string };
  const out = generator.generate({
    components: {
      schemas: {
        X: { type: "object", required: ["a"], properties: { a: { enum: ["p", "q"] }, b: { type: ["string", "null"] }, c: { $ref: "#/components/schemas/Y" } } },
      },
    },
  });
  assert.match(out, /export interface X \{\n {2}a: "p" \| "q";\n {2}b\?: string \| null;\n {2}c\?: Y;\n\}/);
});

test("the routes the client calls are in the document", async () => {
  const { paths } = await document();
  const used: [string, string][] = [
    ["post", "/tenants"], ["get", "/tenants/{id}"], ["post", "/tenants/{id}/keys"], ["post", "/keys"], ["delete", "/keys/{id}"],
    ["post", "/events"], ["get", "/events"], ["get", "/events/{id}"], ["put", "/event-types/{name}"], ["get", "/event-types"],
    ["post", "/webhooks"], ["get", "/webhooks"], ["get", "/webhooks/{id}"], ["patch", "/webhooks/{id}"], ["delete", "/webhooks/{id}"],
    ["post", "/webhooks/{id}:rotateSecret"], ["post", "/webhooks/{id}:replay"], ["get", "/deliveries"], ["get", "/deliveries/{id}"],
    ["post", "/deliveries/{id}:redeliver"], ["post", "/deliveries/{id}:skip"], ["post", "/operations"], ["get", "/operations"], ["get", "/operations/{id}"],
    ["delete", "/operations/{id}"], ["post", "/operations/{id}:cancel"], ["post", "/operations/{id}:wait"], ["post", "/operations:claim"],
    ["post", "/operations/{id}:heartbeat"], ["post", "/operations/{id}:complete"], ["post", "/operations/{id}:fail"], ["post", "/videos"],
  ];
  const missing = used.filter(([m, p]) => !(paths[p] && m in paths[p]!)).map(([m, p]) => `${m.toUpperCase()} ${p}`);
  assert.deepEqual(missing, [], "the SDK calls routes the document does not have");
});
