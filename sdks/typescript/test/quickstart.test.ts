// The README's quickstart, run as written: its `herald.toml` block is the config of a fresh
// `herald serve`; its TypeScript block is compiled with tsc (strict) and run with node against it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { PACKAGE, startHerald } from "./helpers.js";

function block(lang: string, text: string): string {
  const section = text.split("## Quickstart")[1]!.split("\n## ")[0]!;
  const found = new RegExp("```" + lang + "\\n([\\s\\S]*?)```").exec(section);
  assert.ok(found, `no ${lang} block in the README's quickstart`);
  return found[1]!;
}

test("the README quickstart runs", async () => {
  const readme = readFileSync(join(PACKAGE, "README.md"), "utf8");
  const server = await startHerald(block("toml", readme));
  try {
    // Inside the package, so that `@herald/client` resolves to this checkout's build.
    const dir = join(PACKAGE, "build-test", "quickstart");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "quickstart.ts"), block("ts", readme));
    const tsc = join(PACKAGE, "node_modules", "typescript", "bin", "tsc");
    await promisify(execFile)(process.execPath, [
      tsc, "--strict", "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext",
      "--skipLibCheck", "--types", "node", "--rootDir", dir, "--outDir", dir, join(dir, "quickstart.ts"),
    ], { cwd: PACKAGE });
    const { stdout } = await promisify(execFile)(process.execPath, [join(dir, "quickstart.js")], {
      env: { ...process.env, HERALD_URL: server.url, HERALD_ADMIN_KEY: server.adminKey },
      timeout: 120_000,
    });
    assert.match(stdout, /started operations\/op_/);
    assert.match(stdout, /done: \{"video_id":"vid_99","source":"https:\/\/example.com\/meeting.mp4"\}/);
  } finally {
    await server.stop();
  }
});
