// Validates an AsyncAPI document with @asyncapi/parser; exits 1 on any error.
// Usage: NODE_PATH=/var/cache/herald-tools/node/node_modules node scripts/validate-asyncapi.js FILE
const fs = require('fs');
const { Parser } = require('@asyncapi/parser');

(async () => {
  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(fs.readFileSync(process.argv[2], 'utf8'));
  // Severity 0 is an error; 1 warning, 2 info, 3 hint.
  const errors = diagnostics.filter((d) => d.severity === 0);
  for (const d of diagnostics) {
    console.error(`severity ${d.severity} ${d.code}: ${d.message} at ${JSON.stringify(d.path)}`);
  }
  if (!document || errors.length > 0) {
    console.error(`invalid AsyncAPI: ${errors.length} error(s)`);
    process.exit(1);
  }
  console.log(`valid AsyncAPI ${document.version()}`);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
