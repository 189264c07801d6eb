// Generates src/types.ts from Herald's OpenAPI document (no dependencies):
//   node scripts/gen-types.mjs http://127.0.0.1:8288/openapi.json > src/types.ts
//   node scripts/gen-types.mjs openapi.json > src/types.ts
// Every schema under `components.schemas` becomes an interface (optional fields `?`, enums
// as unions of literals, `["x", "null"]` as `X | null`). test/openapi.test.ts regenerates it
// from a running Herald and fails when the committed file differs.
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";

const SCALARS = { string: "string", integer: "number", number: "number", boolean: "boolean", null: "null" };

export function tsType(schema) {
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if ("const" in schema) return JSON.stringify(schema.const);
  let kinds = schema.type;
  if (kinds === undefined) return "unknown";
  if (typeof kinds === "string") kinds = [kinds];
  return kinds
    .map((k) => {
      if (k === "array") {
        const item = tsType(schema.items ?? {});
        return item.includes(" ") ? `Array<${item}>` : `${item}[]`;
      }
      if (k === "object") return "Record<string, unknown>";
      return SCALARS[k];
    })
    .join(" | ");
}

export function generate(document) {
  const blocks = [
    "// Wire types generated from Herald's /openapi.json by scripts/gen-types.mjs. Do not edit.\n" +
      "// test/openapi.test.ts regenerates this file from a running Herald and fails on any difference.",
  ];
  const schemas = document.components.schemas;
  for (const name of Object.keys(schemas).sort()) {
    const schema = schemas[name];
    const props = schema.properties;
    if (schema.type !== "object" || !props || Object.keys(props).length === 0) {
      blocks.push(`export type ${name} = ${tsType(schema)};`);
      continue;
    }
    const required = new Set(schema.required ?? []);
    const lines = [];
    if (schema.description) lines.push(`/** ${schema.description} */`);
    lines.push(`export interface ${name} {`);
    for (const [field, prop] of Object.entries(props)) {
      lines.push(`  ${field}${required.has(field) ? "" : "?"}: ${tsType(prop)};`);
    }
    lines.push("}");
    blocks.push(lines.join("\n"));
  }
  return blocks.join("\n\n") + "\n";
}

export async function load(source) {
  if (/^https?:\/\//.test(source)) {
    const answer = await fetch(source);
    if (!answer.ok) throw new Error(`${source} answered ${answer.status}`);
    return answer.json();
  }
  return JSON.parse(await readFile(source, "utf8"));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  if (process.argv.length !== 3) {
    console.error("usage: gen-types.mjs OPENAPI_JSON_FILE_OR_URL");
    process.exit(2);
  }
  process.stdout.write(generate(await load(process.argv[2])));
}
